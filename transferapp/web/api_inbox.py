"""The Inbox's part of the REST API (#24), on the same /api/v1/ and the same project keys as
web/api.py: upload unlabelled images, ask which to label next, give one its label.

Its routes register on web.api's `api` when this module is imported (transferapp/urls.py imports
it before it mounts api.urls)."""
from django.http import Http404
from ninja import Query, Schema
from ninja.errors import HttpError

from transferapp.accounts import roles
from transferapp.labelling import asking, inbox
from transferapp.labelling import ranking as inbox_ranking
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.models import Image
from transferapp.web import uploads
from transferapp.web.api import (
    _errors,
    _image_count,
    _images_body,
    _project_for_key,
    api,
)

# POST /projects/{project_id}/inbox               (files → the upload's per-file report)
# GET  /projects/{project_id}/inbox/next?n=10     ([{"image", "file", "suggestion": {"label", "probability"}, "reason"}])
# POST /projects/{project_id}/images/{image}/label ({"label": NAME} → moves it out of the Inbox; 400 lists the classes)


# --- which to label next, and labelling one (#24) -------------------------------------------------
NEXT_MAX = 100


class SuggestionOut(Schema):
    label: str
    probability: float | None


class InboxNextOut(Schema):
    image: int
    file: str
    suggestion: SuggestionOut | None
    reason: str


class LabelIn(Schema):
    label: str


class LabelledOut(Schema):
    image: int
    label: str
    inbox: int


@api.get("/projects/{project_id}/inbox/next", response={200: list[InboxNextOut], **_errors(401, 404, 422, 429)})
def inbox_next(request, project_id: int, n: int = Query(10, ge=1, le=NEXT_MAX, description="How many, at most.")):
    """The next Inbox images to label, in the order the labelling page asks them, each with the quick
    model's suggestion (null before it can be trained) and why it is asked."""
    project = _project_for_key(request, project_id, need=roles.LABELLER)  # the labelling page's queue
    if inbox_ranking.is_stale(project):  # as the labelling page does: a script may be the only labeller
        inbox_ranking.rank_schedule(project=project)
    return [{key: item[key] for key in ("image", "file", "suggestion", "reason")}
            for item in asking.inbox_next(project=project, n=n)]


@api.post("/projects/{project_id}/images/{image_id}/label", response={200: LabelledOut, **_errors(400, 401, 404, 422, 429)})
def inbox_image_label(request, project_id: int, image_id: int, payload: LabelIn):
    """Give an Inbox image its class (a class name of the project, in any case): it leaves the Inbox and trains
    the next version like any labelled image."""
    project = _project_for_key(request, project_id, need=roles.LABELLER)
    image = Image.inbox.filter(project=project, pk=image_id).first()
    if image is None:
        raise Http404("No such image in this project's Inbox.")
    # the exact name first; else any case, as imports match class names ("Dog" labels "dog")
    label = (project.labels.filter(name=payload.label.strip()).first()
             or project.labels.filter(name__iexact=payload.label.strip()).order_by("pk").first())
    if label is None:
        names = ", ".join(library_selectors.project_class_order(project=project)) or "none yet"
        raise HttpError(400, f"“{payload.label}” is not a class of this project. Its classes: {names}.")
    inbox.inbox_label(project=project, image_ids=[image.pk], label=label, asked=True)
    if inbox_ranking.due_after_labels(project):
        inbox_ranking.rank_schedule(project=project)
    return {"image": image.pk, "label": label.name, "inbox": Image.inbox.filter(project=project).count()}
class InboxFileOut(Schema):
    file: str
    status: str  # added | skipped (already in the Inbox) | refused (error says why)
    image: int | None
    error: str


class InboxUploadOut(Schema):
    added: int
    skipped: int
    refused: int
    files: list[InboxFileOut]


@api.post("/projects/{project_id}/inbox", response={200: InboxUploadOut, **_errors(400, 401, 404, 413, 429)},
          openapi_extra=_images_body(raw=False))
def inbox_add(request, project_id: int):
    """Add unlabelled images to the project's Inbox: the upload page's checks, duplicates, quotas
    and per-file report (a copy of an image already in a class is refused, naming the class)."""
    project = _project_for_key(request, project_id, need=roles.LABELLER, hits=lambda: _image_count(request))
    outcomes = library_images.images_add_uploaded(project=project, label=None, uploads=request.FILES.getlist("files"),
                                                  refused=uploads.refused_files(request))
    if not outcomes:
        raise HttpError(400, "Send one or more images as multipart form files named “files”.")
    if any(o.status == "added" for o in outcomes):
        library_images.features_schedule(project=project)
    files = [{"file": o.name, "status": o.status, "image": o.image.pk if o.image else None, "error": o.error}
             for o in outcomes]
    return {**{state: sum(f["status"] == state for f in files) for state in ("added", "skipped", "refused")},
            "files": files}
