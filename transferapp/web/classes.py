"""Class pages: one class's images, rename, delete, bulk actions, uploads."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.library import selectors as library_selectors
from transferapp.library import trash
from transferapp.reporting import trust
from transferapp.training import selectors as training_selectors
from transferapp.web import actions, uploads


@login_required
@require_POST
def label_create(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    typed = request.POST.get("name", "")
    label = actions.apply(request, library_projects.label_create, project=project, name=typed)
    _say_if_renamed(request, typed, label)
    back = request.POST.get("next", "")  # the labelling page adds classes and comes back to itself
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                                require_https=request.is_secure()):
        return redirect(back)
    return redirect(label or project)


@login_required
def label_detail(request, project_pk, pk):
    label = library_selectors.label_get_for_user(user=request.user, need=roles.VIEWER, project_pk=project_pk, pk=pk)
    return label_page(request, label, partial=bool(request.htmx))


def label_page(request, label, *, partial: bool):
    context = {"project": label.project, "label": label, "images": label.images.all(), "undo": _pop_undo(request, label),
               "other_labels": library_selectors.other_labels(label=label),
               "split_counts": library_selectors.split_counts(images=label.images.all())}
    if request.GET.get("suspects"):  # the latest run's suspected mislabels in this class, most suspect first
        run = training_selectors.latest_finished_run(project=label.project)
        found = trust.suspects(run, limit=100, label=label) if run else []
        context.update(images=[row["image"] for row in found], suspects_only=True)
    if partial:
        return render(request, "transferapp/label_detail.html#image-grid", context)
    return render(request, "transferapp/label_detail.html", context)


def offer_undo(request, label, images) -> None:
    """The next view of this class shows "Deleted N images · Undo" once; the trash keeps them longer."""
    request.session["undo"] = {"label": label.pk, "images": [image.pk for image in images]}


def _pop_undo(request, label) -> dict | None:
    undo = request.session.get("undo")
    if not undo or undo.get("label") != label.pk:
        return None
    del request.session["undo"]
    return {"images": undo["images"], "count": len(undo["images"])}


@login_required
@require_POST
def label_rename(request, project_pk, pk):
    label = library_selectors.label_get_for_user(user=request.user, need=roles.EDITOR, project_pk=project_pk, pk=pk)
    typed = request.POST.get("name", "")
    _say_if_renamed(request, typed, actions.apply(request, library_projects.label_rename, label=label, name=typed))
    return redirect(label)


def _say_if_renamed(request, typed: str, label) -> None:
    if label is not None and label.name != typed.strip():
        messages.info(request, f"Saved as “{label.name}”: in class names “<” and “>” become “‹” and “›”, "
                               "and control characters are left out.")


@login_required
@require_POST
def label_delete(request, project_pk, pk):
    label = library_selectors.label_get_for_user(user=request.user, need=roles.EDITOR, project_pk=project_pk, pk=pk)
    if not actions.apply(request, library_projects.confirm_name, typed=request.POST.get("confirm_name", ""), name=label.name, what="class"):
        return redirect(label)
    library_projects.label_delete(label=label)
    messages.success(request, f"Class “{label.name}” and its images deleted.")
    return redirect(label.project)


@login_required
@require_POST
def label_bulk(request, project_pk, pk):
    """Move, delete, set aside for testing or give back to training the images selected in a class grid."""
    label = library_selectors.label_get_for_user(user=request.user, need=roles.LABELLER, project_pk=project_pk, pk=pk)
    images = library_selectors.images_in_label(label=label, pks=request.POST.getlist("images"))
    action = request.POST.get("action")
    if not images:
        messages.error(request, "Select one or more images first.")
    elif action in ("test", "train"):
        changed = library_images.images_set_aside(images=images, for_testing=action == "test")
        messages.success(request, f"Set aside {changed} image(s) for testing: no run trains on them or chooses with "
                                  "them; each run scores its final model on them." if action == "test"
                         else f"{changed} image(s) will be used for training again.")
    elif action == "delete":
        trash.images_delete(images=images)
        offer_undo(request, label, images)
    else:
        target_pk = request.POST.get("target", "")
        target = library_selectors.label_get_for_user(user=request.user, need=roles.LABELLER, project_pk=project_pk, pk=library_selectors.parse_id(target_pk) or 0)
        moved = library_images.images_move(images=images, label=target)
        messages.success(request, f"Moved {moved} image(s) to “{target.name}”.")
    return redirect(label)


@login_required
@require_POST
def label_upload(request, project_pk, pk):
    label = library_selectors.label_get_for_user(user=request.user, need=roles.LABELLER, project_pk=project_pk, pk=pk)
    files = request.FILES.getlist("files")
    outcomes = library_images.images_add_uploaded(project=label.project, label=label, uploads=files,
                                                  refused=uploads.refused_files(request))
    if any(outcome.image for outcome in outcomes):
        library_images.features_schedule(project=label.project)
    if actions.is_script_request(request):
        return _upload_json(outcomes)
    _upload_messages(request, outcomes)
    return redirect(label)

UPLOAD_STATES = ("added", "skipped", "refused")


def _upload_json(outcomes):
    """Per file: status (added / skipped / refused) and why; 400 only when every file was refused."""
    if not outcomes:
        return JsonResponse({"error": "No file was received."}, status=400)
    files = [{"name": o.name, "status": o.status, "reason": o.error} for o in outcomes]
    for entry, o in zip(files, outcomes):
        if o.image is not None:
            entry.update(id=o.image.pk, thumbnail=reverse("image_thumbnail", args=[o.image.pk]))
    counts = {state: sum(1 for o in outcomes if o.status == state) for state in UPLOAD_STATES}
    body = {"files": files, **counts, "images": [f for f in files if f["status"] == "added"]}
    if counts["refused"] == len(outcomes):
        body["error"] = " ".join(f"{o.name}: {o.error}" for o in outcomes)
        return JsonResponse(body, status=400)
    return JsonResponse(body)


def upload_summary(outcomes) -> str:
    """ "5 added, 1 skipped, 1 refused": the states that occurred, in that order."""
    counts = [(sum(1 for o in outcomes if o.status == state), state) for state in UPLOAD_STATES]
    return ", ".join(f"{n} {state}" for n, state in counts if n)


def _upload_messages(request, outcomes):
    if not outcomes:
        messages.error(request, "Choose one or more image files first.")
        return
    refused = any(o.status == "refused" for o in outcomes)
    (messages.warning if refused else messages.success)(request, upload_summary(outcomes) + ".")
    for outcome in outcomes:
        if outcome.status == "skipped":
            messages.info(request, f"Skipped {outcome.name}: {outcome.error}")
        elif outcome.status == "refused":
            messages.error(request, f"Refused {outcome.name}: {outcome.error}")
