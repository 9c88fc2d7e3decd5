"""The review queue (#25): confirm or correct logged predictions one key each, and add the
reviewed ones to their class as training images."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.library import errors, reviews
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.models import Prediction
from transferapp.web import actions
from transferapp.web.images import _private_file

REVIEWED_SHOWN = 30
KEYED_CLASSES = 9  # number keys 1–9


@login_required
def review_queue(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    if request.htmx and request.GET.get("part") == "reviewed":  # refreshed after each keyboard review
        return render(request, "transferapp/review_queue.html#reviewed", _reviewed_context(project))
    audit, to_learn = reviews.queue_audit(project), reviews.queue_to_learn(project)
    items = ([{"prediction": p, "stream": "audit"} for p in audit[:reviews.QUEUE_SHOWN]]
             + [{"prediction": p, "stream": "learn"} for p in to_learn[:reviews.QUEUE_SHOWN]])
    classes = library_selectors.project_class_order(project=project)
    context = {"project": project, "items": items, "first": items[0] if items else None,
               "n_audit": audit.count(), "n_learn": to_learn.count(),
               "classes": [{"name": name, "key": i + 1 if i < KEYED_CLASSES else None} for i, name in enumerate(classes)],
               "low_confidence": reviews.LOW_CONFIDENCE, **_reviewed_context(project)}
    return render(request, "transferapp/review_queue.html", context)


def _reviewed_context(project, notices=()) -> dict:
    done = reviews.reviewed(project)
    return {"project": project, "reviewed": done[:REVIEWED_SHOWN], "n_reviewed": done.count(),
            "n_addable": done.filter(added_image__isnull=True).exclude(image="").count(), "notices": list(notices)}


def _prediction(request, pk, need=roles.LABELLER) -> Prediction:
    return reviews.prediction_get_for_user(user=request.user, pk=pk, need=need)


@login_required
def prediction_image(request, pk):
    """The small JPEG kept of a logged prediction, for its owner."""
    prediction = _prediction(request, pk, need=roles.VIEWER)
    if not prediction.image:
        raise Http404("Image not kept")
    return _private_file(prediction.image)


@login_required
@require_POST
def prediction_review(request, pk):
    """One review from the queue: `label` names the true class; `accept` says the model was right."""
    prediction = _prediction(request, pk)
    label = prediction.top_label if request.POST.get("accept") else request.POST.get("label", "")
    try:
        reviews.review_record(prediction=prediction, label=label, by=request.user, source=Prediction.ReviewSource.QUEUE)
    except errors.ServiceError as exc:
        return actions.refuse(request, str(exc), _queue_url(prediction))
    if actions.is_script_request(request):
        return JsonResponse({"id": prediction.pk, "label": prediction.review_label, "correct": prediction.correct})
    return redirect(_queue_url(prediction))


@login_required
@require_POST
def prediction_review_undo(request, pk):
    prediction = _prediction(request, pk)
    reviews.review_undo(prediction=prediction)
    if actions.is_script_request(request):
        return JsonResponse({"id": prediction.pk, "label": ""})
    return redirect(_queue_url(prediction))


@login_required
@require_POST
def prediction_add(request, pk):
    """"Add to class <label>": the reviewed prediction's image becomes a training image."""
    prediction = _prediction(request, pk)
    try:
        outcome = reviews.add_to_training(prediction=prediction)
    except errors.ServiceError as exc:
        notices = [("error", str(exc))]
    else:
        notices = [_notice(outcome)]
        if outcome.image is not None:
            library_images.features_schedule(project=prediction.project)
    return _after_add(request, prediction.project, notices)


@login_required
@require_POST
def review_add_all(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    outcomes = reviews.add_all_reviewed(project=project)
    added = sum(1 for o in outcomes if o.image is not None)
    if added:
        library_images.features_schedule(project=project)
    notices = [("success" if added else "info",
                f"Added {added} reviewed image{'s' if added != 1 else ''} to training.")]
    notices += [_notice(o) for o in outcomes if o.image is None]
    return _after_add(request, project, notices)


def _notice(outcome) -> tuple[str, str]:
    if outcome.image is not None:
        return "success", f"Added to class “{outcome.prediction.review_label}” ({outcome.image.provenance})."
    what = outcome.prediction.file_name or f"prediction {outcome.prediction.pk}"
    return ("info" if outcome.duplicate else "error"), f"{what}: {outcome.message}"


def _after_add(request, project, notices):
    if request.htmx:
        return render(request, "transferapp/review_queue.html#reviewed", _reviewed_context(project, notices))
    for level, text in notices:
        getattr(messages, level)(request, text)
    return redirect(f"{_queue_url(project=project)}#reviewed")


def _queue_url(prediction=None, project=None) -> str:
    return reverse("review_queue", args=[(project or prediction.project).pk])
