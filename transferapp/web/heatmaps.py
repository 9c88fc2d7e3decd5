"""Heat maps of a run's predictions, as PNG; the similar training images beside a mistake."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseNotFound
from django.shortcuts import render

from transferapp.accounts import roles
from transferapp.engine import imaging
from transferapp.library import selectors as library_selectors
from transferapp.serving import predictions
from transferapp.training import selectors as training_selectors


@login_required
def run_heatmap(request, pk, digest, class_index):
    """Where the run's model looked for a class in an image predicted on the predict page (kept
    by content hash for a while: those images are not stored)."""
    run = training_selectors.run_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    try:
        png = predictions.heatmap_png(run, digest, class_index)
    except predictions.PredictionError as exc:
        raise Http404(str(exc)) from None
    if png is None:  # the page shows its own sentence; this one is for API clients and curious users
        return HttpResponseNotFound("This heat map is no longer kept: predict the image again to see it.",
                                    content_type="text/plain; charset=utf-8")
    return _png(png)


@login_required
def run_image_heatmap(request, pk, image_pk, class_index):
    """The same for an image of the project (the results page's misclassified gallery)."""
    run = training_selectors.run_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    image = library_selectors.images_by_pk(project=run.project, pks=[image_pk]).get(image_pk)
    if image is None:
        raise Http404("No such image in this project")
    try:
        return _png(predictions.stored_heatmap_png(run, image, class_index))
    except (FileNotFoundError, imaging.DecodeError):
        raise Http404("This image's file is missing or unreadable") from None
    except predictions.PredictionError as exc:
        raise Http404(str(exc)) from None


@login_required
def run_image_similar(request, pk, image_pk):
    """The results page's mistakes: the training images the run's model finds most like one image
    of the project (an htmx fragment, asked for once the mistake scrolls into view)."""
    run = training_selectors.run_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    image = library_selectors.images_by_pk(project=run.project, pks=[image_pk]).get(image_pk)
    if image is None:
        raise Http404("No such image in this project")
    cases, empty = [], "None kept for this model."
    try:
        cases = predictions.stored_similar(run, image)
    except (FileNotFoundError, imaging.DecodeError):
        empty = "This image's file is missing or unreadable."
    except predictions.PredictionError as exc:
        empty = str(exc)
    return render(request, "transferapp/_similar_mistake.html", {"cases": cases, "empty": empty})


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    # The URL names the run, the image's content and the class: a reload is served by the browser.
    response["Cache-Control"] = "private, max-age=3600"
    return response
