"""Reviews of logged predictions (#25): the true class of a prediction, from the owner's review
queue or from a client's own system through the feedback API."""
from django.utils import timezone

from transferapp.library import errors
from transferapp.models import Prediction


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
