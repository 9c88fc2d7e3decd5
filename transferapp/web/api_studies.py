"""Reading studies in the REST API (#26), on web.api's `api` (transferapp/urls.py imports this module
before it mounts api.urls).

Reading is personal: `next` and `reads` need a personal token of a reader of the study (a project
key is no one's, so it gets a 403). What a reader receives is the study's id for the image (its study
item's id, never the project's image id, which would lead to the image's class) and a URL of its
bytes (a freshly encoded PNG, never the stored file), nothing else: no label, no model answer, no other
reader's read. Starting a study needs an editor
(a token) or the project's key."""
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse
from ninja import Query, Schema
from ninja.errors import HttpError

from transferapp.accounts import roles
from transferapp.library import errors
from transferapp.models import ReadingStudy
from transferapp.studies import studies
from transferapp.web import studies as web_studies
from transferapp.web.api import _errors, _project_for_key, api, caller_user

# POST /projects/{project_id}/studies           ({"readers": [NAMES], "images": "test" | "validation" | [ids], "name"?} → {"id", "n_images"})
# GET  /studies/{study_id}/next?n=10            (the calling reader's unread images: [{"image", "file"}])
# POST /studies/{study_id}/reads                ({"image", "label"} → the caller's progress)
# GET  /studies/{study_id}/images/{image}/file  (the image as a PNG, for a reader or anyone with a role)
# Everywhere here "image" is the study's id for the image (its study item), not the project's image id.
NEXT_MAX = 100


class StudyIn(Schema):
    readers: list[str]
    images: str | list[int]
    name: str = ""


class StudyOut(Schema):
    id: int
    n_images: int


class NextOut(Schema):
    image: int  # the study's id for the image (not the project's image id)
    file: str


class ReadIn(Schema):
    image: int  # the study's id for the image, as `next` gave it
    label: str


class ReadOut(Schema):
    image: int
    label: str
    read: int
    images: int
    left: int


@api.post("/projects/{project_id}/studies", response={200: StudyOut, **_errors(400, 401, 403, 404, 422, 429)})
def study_start(request, project_id: int, payload: StudyIn):
    """Start a blind reading study of the test set, the current model's validation images, or a list
    of image ids, with two or more readers (usernames of people with the labeller role or higher)."""
    project = _project_for_key(request, project_id, need=roles.EDITOR)
    names = list(dict.fromkeys(name.strip() for name in payload.readers))
    readers = list(get_user_model().objects.filter(username__in=names, is_active=True))
    found = {reader.get_username() for reader in readers}
    unknown = [name for name in names if name not in found or not roles.role_of(_user(readers, name), project)]
    if unknown:
        raise HttpError(400, f"No one named {', '.join(unknown)} has a role in this project: share it with them first.")
    try:
        study = studies.study_create(project=project, name=payload.name, readers=readers, images=payload.images,
                                     created_by=caller_user(request))
    except errors.ServiceError as exc:
        raise HttpError(400, str(exc)) from None
    return {"id": study.pk, "n_images": study.items.count()}


def _user(readers, name):
    return next((reader for reader in readers if reader.get_username() == name), None)


def _study(request, study_id: int, need: str) -> ReadingStudy:
    """The study, through its project's access check and the caller's allowance (404 for a stranger)."""
    study = ReadingStudy.objects.select_related("project").filter(pk=study_id).first()
    if study is None:
        raise Http404("No such study.")
    _project_for_key(request, study.project_id, need=need)
    return study


def _reader(request, study: ReadingStudy):
    """The calling reader: a personal token's user who reads in this study; anyone else gets a 403."""
    user = caller_user(request)
    if user is None:
        raise PermissionDenied("A project key reads as no one: send a personal token of one of the study's readers.")
    if not studies.is_reader(study, user):
        raise PermissionDenied("You are not a reader of this study.")
    return user


@api.get("/studies/{study_id}/next", response={200: list[NextOut], **_errors(401, 403, 404, 422, 429)})
def study_next(request, study_id: int, n: int = Query(10, ge=1, le=NEXT_MAX, description="How many, at most.")):
    """The calling reader's unread images, in the study's order: the study's id for each image (not
    the project's image id) and the URL of its bytes (fetched with the same token). Nothing else: no label, no model answer, no other read. A
    closed study has nothing left to read."""
    study = _study(request, study_id, roles.LABELLER)
    reader = _reader(request, study)
    if not study.is_open:
        return []
    return [{"image": item.pk,
             "file": request.build_absolute_uri(reverse("api:study_image_file", args=[study.pk, item.pk]))}
            for item in studies.next_for_reader(study=study, reader=reader, n=n)]


@api.post("/studies/{study_id}/reads", response={200: ReadOut, **_errors(400, 401, 403, 404, 422, 429)})
def study_read(request, study_id: int, payload: ReadIn):
    """Record (or change, while the study is open) the calling reader's label for one image, named by
    the study's id for it (as `next` gave it)."""
    study = _study(request, study_id, roles.LABELLER)
    reader = _reader(request, study)
    try:
        row = studies.read(study=study, reader=reader, item_id=payload.image, label=payload.label.strip())
    except errors.ServiceError as exc:
        raise HttpError(400, str(exc)) from None
    read = len(studies.reads_of(study=study, reader=reader))
    total = study.items.count()
    return {"image": payload.image, "label": row.label, "read": read, "images": total, "left": total - read}


@api.get("/studies/{study_id}/images/{image}/file", url_name="study_image_file")
def study_image_file(request, study_id: int, image: int):
    """One study image as a PNG (freshly encoded, so its bytes do not match the project's stored file;
    a DICOM file as a PNG of its picture), named by the study's id for it, for a reader of the study or
    anyone with a role in its project."""
    return web_studies.study_item_png(_study(request, study_id, roles.VIEWER), image)
