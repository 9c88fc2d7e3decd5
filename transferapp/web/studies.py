"""Reading studies' pages (#26): the list, starting one, blind reading, adjudication and writing back.

Every view loads the study through a project the user can see (a stranger gets a 404) and asks
`roles.require` for the role it needs (too low: 403). Blindness: the reading page shows a reader
the image (by its study item's id, never the project's image id or file name, and as freshly
encoded PNG bytes, never the stored file's), the classes to choose from and that reader's own read,
nothing else: no current label, no model answer, no other reader's read."""
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.accounts import selectors as accounts_selectors
from transferapp.library import errors
from transferapp.library import selectors as library_selectors
from transferapp.library.selectors import parse_id, parse_ids
from transferapp.models import Membership, Project, ReadingStudy
from transferapp.studies import agreement, studies
from transferapp.web import images as web_images

KEYED_CLASSES = 9  # number keys 1–9, as on the labelling page
SOURCES = ("test", "validation", "class", "selection")


def _project(request, pk, need) -> Project:
    return library_selectors.project_get_for_user(user=request.user, pk=pk, need=need)


def _study(request, sid, need) -> ReadingStudy:
    return accounts_selectors.checked_get(ReadingStudy.objects.select_related("project"), user=request.user,
                                          need=need, pk=sid)


def _keyed(names: list[str]) -> list[dict]:
    return [{"name": name, "key": i + 1 if i < KEYED_CLASSES else None} for i, name in enumerate(names)]


# --- the list (also the project page's section) --------------------------------------------------

def study_rows(*, project, user) -> list[dict]:
    """The studies a user may see in a project, each with its readers' progress and what the user may
    do with it (read, adjudicate)."""
    role = roles.role_of(user, project)
    editor = roles.at_least(role, roles.EDITOR)
    rows = []
    for study in studies.studies_for(project=project, user=user).prefetch_related("readers"):
        reader = any(r.pk == user.pk for r in study.readers.all())
        rows.append({"study": study, "progress": studies.progress(study=study), "can_read": reader,
                     "can_adjudicate": editor and not (reader and study.is_open), "editor": editor,
                     # the figures: non-reading editors any time (interim while open), everyone once it is closed
                     "can_see_agreement": agreement.may_see(study, role=role, reader=reader)})
    return rows


@login_required
def study_list(request, pk):
    project = _project(request, pk, roles.VIEWER)
    editor = roles.at_least(roles.role_of(request.user, project), roles.EDITOR)
    return render(request, "transferapp/studies/list.html",
                  {"project": project, "study_rows": study_rows(project=project, user=request.user), "editor": editor})


# --- starting a study ----------------------------------------------------------------------------

def reader_choices(project) -> list:
    """Who may read: the owner and the members with the labeller role or higher."""
    members = Membership.objects.filter(project=project, role__in=[roles.LABELLER, roles.EDITOR]).values("user_id")
    users = get_user_model().objects.filter(is_active=True)
    return list(users.filter(Q(pk__in=members) | Q(pk=project.owner_id)).order_by("username"))


def _images_chosen(request, project):
    """What the editor chose to read, in study_create's words; the class and ids are checked here
    against the project (never trusted from the form)."""
    source = request.POST.get("source", "")
    if source == "class":
        label = project.labels.filter(pk=parse_id(request.POST.get("label", "")) or 0).first()
        errors.refuse_if("Choose one of this project's classes." if label is None else "")
        return f"class:{label.name}"
    if source == "selection":
        return parse_ids(request.POST.getlist("image"))
    errors.refuse_if("Choose which images to read." if source not in SOURCES else "")
    return source


@login_required
def study_new(request, pk):
    project = _project(request, pk, roles.EDITOR)
    candidates = reader_choices(project)
    chosen = {u.pk for u in candidates if str(u.pk) in request.POST.getlist("readers")}
    # ids from a class page's selection ("images", POSTed with its CSRF token), or kept by this form
    selection = parse_ids(request.POST.getlist("image") or request.POST.getlist("images") or request.GET.getlist("image"))
    if request.method == "POST" and "source" in request.POST:
        try:
            study = studies.study_create(project=project, name=request.POST.get("name", ""),
                                         readers=[u for u in candidates if u.pk in chosen],
                                         images=_images_chosen(request, project), created_by=request.user)
        except errors.ServiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Started “{study.name}” with {study.items.count()} images. "
                                      f"Each reader finds it on the project page.")
            return redirect("study_list", pk=project.pk)
    context = {"project": project, "candidates": candidates, "chosen": chosen, "selection": selection,
               "labels": project.labels.all(), "source": request.POST.get("source") or ("selection" if selection else "test"),
               "name": request.POST.get("name", "")}
    return render(request, "transferapp/studies/new.html", context)


# --- reading, blind --------------------------------------------------------------------------------

def _reader_study(request, sid) -> ReadingStudy:
    study = _study(request, sid, roles.LABELLER)
    if not studies.is_reader(study, request.user):
        raise PermissionDenied("You are not a reader of this study.")
    return study


@login_required
def study_read(request, sid):
    """One image at a time: ?at=N (1-based) shows the Nth; without it, the first the reader has not
    read. POST records (or changes) the reader's label for one image, then moves on. Images are
    named by their study item's id throughout."""
    study = _reader_study(request, sid)
    item_ids = list(study.items.values_list("pk", flat=True))
    if request.method == "POST":
        return _read_posted(request, study, item_ids)
    mine = studies.reads_of(study=study, reader=request.user)
    unread = [i for i, item_id in enumerate(item_ids, 1) if item_id not in mine]
    at = parse_id(request.GET.get("at", ""))
    at = at if at and 1 <= at <= len(item_ids) else (unread[0] if unread and study.is_open else None)
    item_id = item_ids[at - 1] if at else None
    context = {"study": study, "project": study.project, "total": len(item_ids), "read": len(mine), "at": at,
               "item_id": item_id, "my_read": mine.get(item_id, ""), "classes": _keyed(study.classes),
               "next_url": _at_url(study, unread[0]) if unread else "",
               "prefetch": _next_file(study, item_ids, at)}
    return render(request, "transferapp/studies/read.html", context)


def _read_posted(request, study, item_ids):
    item_id = parse_id(request.POST.get("image", ""))
    try:
        studies.read(study=study, reader=request.user, item_id=item_id, label=request.POST.get("label", ""))
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("study_read", sid=study.pk)
    mine = studies.reads_of(study=study, reader=request.user)
    here = item_ids.index(item_id) + 1
    after = [i for i, pk in enumerate(item_ids, 1) if pk not in mine and i > here]
    before = [i for i, pk in enumerate(item_ids, 1) if pk not in mine]
    target = (after or before or [None])[0]
    return redirect(_at_url(study, target) if target else reverse("study_read", args=[study.pk]) + "?done=1")


def _at_url(study, at: int) -> str:
    return f"{reverse('study_read', args=[study.pk])}?at={at}"


def _next_file(study, item_ids, at) -> str:
    """The next image's URL, for the browser to fetch ahead (it shows at once)."""
    if not at or at >= len(item_ids):
        return ""
    return reverse("study_image_file", args=[study.pk, item_ids[at]])


def study_item_png(study, item_pk):
    """A study image's picture, named by its study item's id, as freshly encoded PNG bytes: the stored
    file's bytes would match the class page's file byte for byte and so name its class. (Only the
    bytes: the pixels are the same, which no encoding can hide from a member who compares them.)"""
    item = study.items.select_related("image").filter(pk=item_pk).first()
    if item is None:
        raise Http404("That image is not part of this study.")
    return web_images.rendered_png(item.image.file, tag=f"Image {item.position + 1} of reading study {study.pk}")


@login_required
def study_image_file(request, sid, item_pk):
    """A study image's bytes, for a reader of the study or anyone with a role in its project (the
    URL names the image by its study item's id only: nothing in it leads to its class)."""
    return study_item_png(_study(request, sid, roles.VIEWER), item_pk)


# --- adjudication, closing, writing back --------------------------------------------------------------

def _adjudicator_study(request, sid) -> ReadingStudy:
    study = _study(request, sid, roles.EDITOR)
    if study.is_open and studies.is_reader(study, request.user):
        raise PermissionDenied("You read in this study: the others' reads stay hidden from you until it is closed.")
    return study


@login_required
def study_adjudicate(request, sid):
    """The disagreements queue: all reads of one image side by side, the final label by a key."""
    study = _adjudicator_study(request, sid)
    if request.method == "POST":
        try:
            studies.adjudicate(study=study, item_id=parse_id(request.POST.get("item", "")) or 0,
                               label=request.POST.get("label", ""), by=request.user)
        except errors.ServiceError as exc:
            messages.error(request, str(exc))
        return redirect("study_adjudicate", sid=study.pk)
    queue = studies.disagreements(study=study)
    _, readers, table = studies.reads_table(study=study)
    wanted = parse_id(request.GET.get("item", ""))
    current = next((item for item in queue if item.pk == wanted), None) or next(
        (item for item in queue if not item.adjudicated_label), None)
    reads = [{"reader": r.get_username(), "label": table.get(current.pk, {}).get(r.pk, "")} for r in readers] if current else []
    context = {"study": study, "project": study.project, "queue": queue, "current": current, "reads": reads,
               "done": sum(1 for item in queue if item.adjudicated_label), "classes": _keyed(study.classes),
               "progress": studies.progress(study=study),
               "to_write": study.items.exclude(adjudicated_label="").filter(written_back_at__isnull=True).count(),
               "adjudicated": study.items.exclude(adjudicated_label="").select_related("image__label")}
    return render(request, "transferapp/studies/adjudicate.html", context)


@login_required
@require_POST
def study_close(request, sid):
    study = _study(request, sid, roles.EDITOR)
    if study.is_open:
        studies.close(study=study)
        messages.success(request, f"Closed “{study.name}”: reads are final; adjudicate the disagreements next.")
    return redirect("study_adjudicate", sid=study.pk)


@login_required
@require_POST
def study_write_back(request, sid):
    study = _study(request, sid, roles.EDITOR)
    try:
        counts = studies.write_back(study=study)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Wrote the adjudicated labels into the project: {counts['moved']} image(s) moved to "
                                  f"their adjudicated class, {counts['confirmed']} already in it (now confirmed), "
                                  f"{counts['changed']} left as they are because their label changed since the study "
                                  f"started, {counts['skipped']} skipped (deleted since, or their class is gone).")
    return redirect("study_adjudicate", sid=study.pk)
