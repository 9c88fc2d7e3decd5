"""The Inbox's part of the REST API (#24), on the same /api/v1/ and the same project keys as
web/api.py: upload unlabelled images, ask which to label next, give one its label.

Its routes register on web.api's `api` when this module is imported (transferapp/urls.py imports
it before it mounts api.urls)."""
from ninja import Schema
from ninja.errors import HttpError

from transferapp.library import images as library_images
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
    project = _project_for_key(request, project_id, hits=lambda: _image_count(request))
    outcomes = [library_images.UploadOutcome(name=n, error=reason) for n, reason in uploads.refused_files(request)]
    outcomes += [library_images.image_add_uploaded(label=None, project=project, uploaded=upload)
                 for upload in request.FILES.getlist("files")]
    if not outcomes:
        raise HttpError(400, "Send one or more images as multipart form files named “files”.")
    if any(o.status == "added" for o in outcomes):
        library_images.features_schedule(project=project)
    files = [{"file": o.name, "status": o.status, "image": o.image.pk if o.image else None, "error": o.error}
             for o in outcomes]
    return {**{state: sum(f["status"] == state for f in files) for state in ("added", "skipped", "refused")},
            "files": files}
