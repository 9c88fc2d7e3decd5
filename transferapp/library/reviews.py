"""Reviews of logged predictions (#25): the true class of a prediction, from the owner's review
queue or from a client's own system through the feedback API."""
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from transferapp.accounts.selectors import checked_get
from transferapp.library import errors, history, images
from transferapp.models import Image, Prediction, Project


def review_record(*, prediction: Prediction, label: str, by=None, source: str = Prediction.ReviewSource.QUEUE) -> Prediction:
    """Record `label` as the true class of `prediction` (a later review replaces an earlier one).
    The label must be one of the project's classes: a review names what the image really is."""
    label = (label or "").strip()
    if not prediction.project.labels.filter(name=label).exists():
        errors.refuse_if(f"“{label}” is not a class of this project.")
    prediction.review_label = label
    prediction.review_source = source
    prediction.reviewed_by = by
    prediction.reviewed_at = timezone.now()
    prediction.save(update_fields=["review_label", "review_source", "reviewed_by", "reviewed_at"])
    return prediction


def review_undo(*, prediction: Prediction) -> Prediction:
    """Forget a review (the queue's `z`); a prediction already added to training keeps its image."""
    prediction.review_label, prediction.review_source, prediction.reviewed_by, prediction.reviewed_at = "", "", None, None
    prediction.save(update_fields=["review_label", "review_source", "reviewed_by", "reviewed_at"])
    return prediction


def prediction_get_for_user(*, user, pk, need: str) -> Prediction:
    """A logged prediction of a project the user has `need` in (a stranger's is a 404, too low a role a 403)."""
    return checked_get(Prediction.objects.select_related("project", "reviewed_by", "added_image"),
                       user=user, need=need, pk=pk)


# --- the review queue --------------------------------------------------------------------------

# A prediction at or below this probability is "low-confidence": worth a look, to learn from.
LOW_CONFIDENCE = 0.6
QUEUE_SHOWN = 200  # per stream, on one visit of the queue page


def queue_audit(project: Project):
    """The random audit sample still to review (drawn when logged, so reviewing it all keeps live
    accuracy unbiased), in the order the predictions were made. Only those with a kept image:
    a reviewer has to see what the model saw."""
    return (Prediction.objects.filter(project=project, audit=True, review_label="").exclude(image="")
            .order_by("created_at", "pk"))


def queue_to_learn(project: Project):
    """The "don't know" and low-confidence predictions still to review (not in the audit sample):
    chosen for being hard, so they teach the model most and say nothing unbiased about accuracy.
    "Don't know" first, then the least sure."""
    return (Prediction.objects.filter(project=project, audit=False, review_label="").exclude(image="")
            .filter(Q(abstained=True) | Q(probability__lte=LOW_CONFIDENCE))
            .order_by("-abstained", "probability", "created_at", "pk"))


def reviewed(project: Project):
    """Reviewed predictions, the latest review first (the queue page's "add to training" list)."""
    return (Prediction.objects.filter(project=project).exclude(review_label="")
            .select_related("reviewed_by", "added_image").order_by("-reviewed_at", "-pk"))


# --- corrections become training data --------------------------------------------------------

@dataclass
class AddOutcome:
    """What "add to class" did with one reviewed prediction: added (image), or why not (message)."""

    prediction: Prediction
    image: Image | None = None
    message: str = ""
    duplicate: bool = False


def provenance(prediction: Prediction) -> str:
    who = prediction.reviewed_by.username if prediction.reviewed_by else "the feedback API"
    when = timezone.localtime(prediction.reviewed_at or timezone.now())
    return f"from production, reviewed by {who} on {when:%Y-%m-%d}"[:300]


def add_to_training(*, prediction: Prediction) -> AddOutcome:
    """Add a reviewed prediction's kept image to its reviewed class, through the library's normal
    intake (format and size checks, duplicates by content, the owner's quota). The same bytes
    already in the project are reported, not added twice. Refused: no review, or no kept image."""
    if not prediction.review_label:
        raise errors.ServiceError("Review this prediction first: its class is not known yet.")
    if prediction.added_image_id:
        return AddOutcome(prediction, image=prediction.added_image, message="Already added to training.")
    label = prediction.project.labels.filter(name=prediction.review_label).first()
    if label is None:
        raise errors.ServiceError(f"The class “{prediction.review_label}” no longer exists in this project.")
    held = _already_a_training_image(prediction)
    if held:
        return AddOutcome(prediction, message=held, duplicate=True)
    if not prediction.image:
        raise errors.ServiceError("This prediction's image was not kept (or has expired), so it cannot be added.")
    try:
        with prediction.image.open("rb") as f:
            data = f.read()
    except (FileNotFoundError, OSError):
        raise errors.ServiceError("This prediction's image is no longer stored, so it cannot be added.") from None
    name = prediction.file_name or f"prediction-{prediction.pk}.jpg"
    outcome = images.image_add(label=label, name=name, data=data)
    if outcome.image is None:
        return AddOutcome(prediction, message=outcome.error, duplicate=outcome.duplicate_of is not None)
    Image.objects.filter(pk=outcome.image.pk).update(provenance=provenance(prediction))
    outcome.image.provenance = provenance(prediction)
    prediction.added_image = outcome.image
    prediction.save(update_fields=["added_image"])
    history.uploads(project=prediction.project, to=label.name, outcomes=[outcome])  # a reviewed prediction joins training
    return AddOutcome(prediction, image=outcome.image)


def _already_a_training_image(prediction: Prediction) -> str:
    """Why the predicted image is already training data ("" when it is not): the original's bytes
    (prediction.sha256) are one of the project's images, or the model learnt from it. Checked on
    the original, not the kept JPEG, whose re-encoded bytes never match and would come back as a
    near-duplicate of itself."""
    existing = (Image.objects.filter(project_id=prediction.project_id, sha256=prediction.sha256)
                .select_related("label").first() if prediction.sha256 else None)
    if existing is not None:
        return (f"This image is already a training image of class “{existing.label.name}” "
                f"(as “{existing.original_name}”), so it is not added again.")
    if prediction.seen_in_training:
        return "The model learnt from this very image (it was a training image when it was predicted), so it is not added again."
    return ""


def add_all_reviewed(*, project: Project) -> list[AddOutcome]:
    """Every reviewed prediction not yet added whose image is still kept, each as add_to_training;
    one that cannot be added is reported in its outcome and the rest go on."""
    outcomes = []
    pending = reviewed(project).filter(added_image__isnull=True).exclude(image="")
    for prediction in pending:
        try:
            outcomes.append(add_to_training(prediction=prediction))
        except errors.ServiceError as exc:
            outcomes.append(AddOutcome(prediction, message=str(exc)))
    return outcomes


def added_between(*, project: Project, start, end) -> int:
    """Training images added from production (reviewed predictions) between two moments: what a
    version trained on after `end` had that one trained at `start` did not (the version diff)."""
    return Image.objects.filter(project=project, created_at__gt=start, created_at__lte=end).exclude(provenance="").count()


def queue_all(project: Project):
    """Both streams of the queue as one query (unordered): what the queue page shows, and what
    review.needed is measured on. The audit sample and the ones to learn from are disjoint."""
    return (Prediction.objects.filter(project=project, review_label="").exclude(image="")
            .filter(Q(audit=True) | Q(abstained=True) | Q(probability__lte=LOW_CONFIDENCE)))


def in_queue(prediction: Prediction) -> bool:
    """Whether a prediction (a row just logged) is one queue_all counts."""
    return (not prediction.review_label and bool(prediction.image)
            and (prediction.audit or prediction.abstained or prediction.probability <= LOW_CONFIDENCE))


def queue_size(project: Project) -> int:
    """Predictions waiting in the review queue, both streams (what review.needed is measured on)."""
    return queue_all(project).count()
