"""The labelling page (#24): the Inbox one image at a time, a key each, in "label these next" order.

The page fetches the queue as JSON (labelling_queue) and POSTs each action (labelling_act) without a
reload; "more like this" asks labelling_similar for the Inbox images nearest to the one shown."""
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.labelling import asking, inbox
from transferapp.labelling import ranking as inbox_ranking
from transferapp.library import selectors as library_selectors
from transferapp.models import Image

KEYED_CLASSES = 9  # number keys 1–9
QUEUE_SENT = 60  # items a queue fetch carries; the page asks again as it runs low
ACTIONS = ("label", "unsure", "undo")


def _project(request, pk):
    """Every labelling view labels (or ranks for labelling): a labeller's at least."""
    return library_selectors.project_get_for_user(user=request.user, pk=pk, need=roles.LABELLER)


@login_required
def labelling_page(request, pk):
    project = _project(request, pk)
    if inbox_ranking.is_stale(project):
        inbox_ranking.rank_schedule(project=project)
    classes = library_selectors.project_class_order(project=project)
    context = {"project": project, "progress": asking.progress(project=project), "too_few_classes": len(classes) < 2,
               "classes": [{"name": name, "key": i + 1 if i < KEYED_CLASSES else None} for i, name in enumerate(classes)]}
    return render(request, "transferapp/labelling.html", context)


@login_required
def labelling_queue(request, pk):
    """The next Inbox images in asking order, with their suggestions and reasons, and the progress line."""
    project = _project(request, pk)
    items = asking.inbox_next(project=project, n=QUEUE_SENT)
    for item in items:
        item["url"] = reverse("image_file", args=[item["image"]])
    return JsonResponse({"items": items, "progress": asking.progress(project=project)})


@login_required
@require_POST
def labelling_act(request, pk):
    """`action` label (with `label`, a class name), unsure or undo, on the `image` ids given."""
    project = _project(request, pk)
    action, ids = request.POST.get("action", ""), library_selectors.parse_ids(request.POST.getlist("image"))
    if action not in ACTIONS or not ids:
        return JsonResponse({"error": "Say what to do (label, unsure or undo) and with which images."}, status=400)
    if action == "label":
        label = project.labels.filter(name=request.POST.get("label", "")).first()
        if label is None:
            return JsonResponse({"error": "Choose one of this project's classes."}, status=400)
        # "asked": the page's own label of the image it showed (not "more like this"): only such a
        # label records the suggestion and why it was asked, for the honest estimate.
        asked = request.POST.get("asked") == "1" and len(ids) == 1
        done = inbox.inbox_label(project=project, image_ids=ids, label=label, user=request.user, asked=asked)
    elif action == "unsure":
        done = inbox.inbox_set_unsure(project=project, image_ids=ids)
    else:
        done = inbox.inbox_unlabel(project=project, image_ids=ids)
    retrain = action != "unsure" and inbox_ranking.due_after_labels(project) and inbox_ranking.rank_schedule(project=project)
    return JsonResponse({"done": done, "retrain_queued": bool(retrain), "progress": asking.progress(project=project)})


@login_required
def labelling_similar(request, pk, image_pk):
    """"More like this": the Inbox images nearest to one Inbox image of this project."""
    project = _project(request, pk)
    image = Image.inbox.filter(project=project, pk=image_pk).first()
    if image is None:
        raise Http404("No such image in this project's Inbox.")
    similar = asking.similar_in_inbox(project=project, image=image)
    for item in similar:
        item["url"] = reverse("image_thumbnail", args=[item["image"]])
    return JsonResponse({"image": image.pk, "similar": similar})
