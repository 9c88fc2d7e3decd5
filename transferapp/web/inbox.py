"""The Inbox (#24) in the browser: drop unlabelled images in, see them, delete some (with undo)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.labelling import inbox as labelling_inbox
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.library import trash
from transferapp.models import Image
from transferapp.web import actions, classes, uploads

PER_PAGE = 120


@login_required
@require_POST
def inbox_upload(request, pk):
    """Files dropped on the Inbox's zone: each answered added / skipped (already in the Inbox) /
    refused (with why: a copy in a class, not an image, over the quota), as a class upload is."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    outcomes = library_images.images_add_uploaded(project=project, label=None, uploads=request.FILES.getlist("files"),
                                                  refused=uploads.refused_files(request))
    if any(outcome.image for outcome in outcomes):
        library_images.features_schedule(project=project)
    if actions.is_script_request(request):
        return classes._upload_json(outcomes)
    classes._upload_messages(request, outcomes)
    return redirect("inbox_page", pk=project.pk)


@login_required
def inbox_page(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    return render_inbox(request, project, partial=bool(request.htmx))


def render_inbox(request, project, *, partial: bool):
    waiting = Image.inbox.filter(project=project).order_by("inbox_unsure", "-created_at", "-pk")
    page = Paginator(waiting, PER_PAGE).get_page(request.GET.get("page"))
    context = {"project": project, "page": page, "images": page.object_list, "undo": _pop_undo(request, project),
               "counts": labelling_inbox.inbox_count(project=project)}
    return render(request, "transferapp/inbox.html#inbox-grid" if partial else "transferapp/inbox.html", context)


def offer_undo(request, project, images) -> None:
    request.session["inbox_undo"] = {"project": project.pk, "images": [image.pk for image in images]}


def _pop_undo(request, project) -> dict | None:
    undo = request.session.get("inbox_undo")
    if not undo or undo.get("project") != project.pk:
        return None
    del request.session["inbox_undo"]
    return {"images": undo["images"], "count": len(undo["images"])}


@login_required
@require_POST
def inbox_bulk(request, pk):
    """Delete the Inbox images selected in the grid (to the trash: the next view offers Undo)."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    images = library_selectors.inbox_images(project=project, pks=request.POST.getlist("images"))
    if not images:
        messages.error(request, "Select one or more images first.")
    elif request.POST.get("action") == "delete":
        trash.images_delete(images=images)
        offer_undo(request, project, images)
    return redirect("inbox_page", pk=project.pk)
