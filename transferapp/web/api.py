"""The REST API under /api/v1/ (django-ninja): thin like the other views: the access check, then a domain call.

Every call carries a project key (made on the project's page; it opens its own project only, as an
editor) or a personal token (#26: made on the account's tokens page; it acts as its user, with that
user's role in each project), as `Authorization: Bearer <secret>`. Each endpoint names the role it
needs (`_project_for_key(..., need=...)`). Errors are JSON {"error": "<a sentence>"} with the HTTP
status that names the case: 401 no/bad/revoked key or token or a deactivated owner/user, 403 a role
too low, 404 a project the caller has no role in (never told apart from one that does not exist) or
an unknown item, 413 too large, 415 not an image, 429 over the caller's per-minute allowance.
"""
import functools
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern
from ninja import NinjaAPI, Query, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.docs import Swagger
from pydantic import BaseModel, ConfigDict

from transferapp.accounts import roles, throttle
from transferapp.jobs import checks
from transferapp.library import errors, intake
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Prediction, TrainingRun
from transferapp.reporting import monitoring
from transferapp.serving import prediction_log, predictions
from transferapp.serving import similar as serving_similar
from transferapp.training import runs as training_runs
from transferapp.training import selectors as training_selectors
from transferapp.web import uploads
from transferapp.web.api_access import (
    ProjectKey,
    _api_limit,
    _project_for_key,
    caller_bucket,
    caller_projects,
    caller_user,
    prediction_project_id,
)


# Swagger UI is served from ninja's own static files ("ninja" is in INSTALLED_APPS), never a CDN:
# it works offline and under the app's Content-Security-Policy unchanged (settings go in a JSON
# <script type="application/json">, which is data, not code).
class JsonErrorsAPI(NinjaAPI):
    """ninja answers a method a path does not take with a plain-text 405, before any handler runs;
    this API wraps each of its URLs so that one is JSON {"error": ...} like every other error."""

    def _get_urls(self):
        urls = super()._get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = _json_method_not_allowed(pattern.callback)
        return urls


def _json_method_not_allowed(view):
    @functools.wraps(view)  # keeps csrf_exempt and the other marks Django reads on the view
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        allowed = response["Allow"]
        answer = JsonResponse({"error": f"{request.method} is not allowed here; this path takes {allowed}."}, status=405)
        answer["Allow"] = allowed
        return answer
    return wrapped


api = JsonErrorsAPI(title="transferapp API", version="1", auth=ProjectKey(), docs=Swagger(), docs_url="/docs",
                    urls_namespace="api")


def _error(request, message: str, status: int):
    return api.create_response(request, {"error": message}, status=status)


@api.exception_handler(AuthenticationError)
def _unauthorised(request, exc):
    return _error(request, "Missing, unknown or revoked API key or token, or its user's account is deactivated: send "
                           "`Authorization: Bearer <key>` with a key made on the project's page or a personal "
                           "token made on your account's API tokens page.", 401)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _error(request, str(exc) or "Not found.", 404)


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return _error(request, str(exc) or "Your role in this project does not allow this.", 403)


@api.exception_handler(HttpError)
def _http_error(request, exc):
    return _error(request, str(exc), exc.status_code)


@api.exception_handler(predictions.PredictionError)
def _model_unusable(request, exc):
    # The version's files are gone or damaged: the client can do nothing but name another version.
    return _error(request, str(exc), 409)


@api.exception_handler(ValidationError)
def _invalid(request, exc):
    fields = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in exc.errors)
    return _error(request, f"Invalid request: {fields}", 422)


# --- what the schema promises (/api/v1/openapi.json, the docs page's "Try it out") ---------------

class ErrorOut(Schema):
    error: str


def _errors(*statuses: int) -> dict:
    return {status: ErrorOut for status in statuses}


class ModelOut(Schema):
    project: str
    version: int | None
    base: str


class LabelProbability(Schema):
    label: str
    probability: float


class SimilarCaseOut(Schema):
    """A training image the model finds like this one: its id, its class, the cosine similarity of
    their features (1 = the same picture to the model)."""
    image: int
    label: str
    similarity: float


class PredictionOut(BaseModel):
    """One image's answer. Fields not named here (heatmap_png_base64 when asked, ...) pass through:
    a plain pydantic model, because ninja's Schema drops extra fields even with extra="allow"."""
    model_config = ConfigDict(extra="allow")
    id: int | None = None  # the prediction log's row: send feedback to /predictions/{id}/feedback (null: logging is off)
    file: str
    model: ModelOut
    top: LabelProbability | None  # lenient: a schema must never turn a valid answer into a 500
    predictions: list[LabelProbability]
    prediction_set: list[str]
    abstained: bool
    seen_in_training: bool = False  # the very file is one this version learnt from
    unfamiliar: bool = False  # abstained because unlike the training images: `top` is only the closest class
    similar: list[SimilarCaseOut] = []  # with ?similar=k: the k most similar training images, most similar first


class RefusedFileOut(Schema):
    """A file of a multipart request that was not predicted, with the status it would have had alone."""
    file: str
    error: str
    status: int


class UploadResultOut(Schema):
    file: str
    status: str
    message: str | None = None


class UploadOut(Schema):
    results: list[UploadResultOut]
    added: int


class ProjectOut(Schema):
    id: int
    name: str
    role: str  # the caller's: viewer | labeller | editor | owner (a project key: editor)
    classes: list[str]
    published_version: int | None
    effective_version: int | None


_BINARY = {"type": "string", "format": "binary"}


def _images_body(raw: bool) -> dict:
    """The request body ninja cannot see (the views read request.FILES / the raw body themselves)."""
    content = {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "items": _BINARY, "description": "One or more images."}}}}}
    if raw:
        content = {"image/*": {"schema": _BINARY}, **content}
    return {"requestBody": {"required": True, "content": content}}


# --- reading ----------------------------------------------------------------------------------


@api.get("/health", auth=None)
def health(request):
    return {"status": "ok"}


@api.get("/projects", response={200: list[ProjectOut], **_errors(401)})
def project_list(request):
    """The projects the caller may open, each with the caller's role: a key's own project (as an
    editor); every project a personal token's user owns or is a member of."""
    return [{**_project_json(project), "role": role} for project, role in caller_projects(request)]


def _project_json(project) -> dict:
    published = training_selectors.published_run(project=project)
    effective = training_selectors.model_run(project=project)  # what a prediction without a version uses
    return {"id": project.pk, "name": project.name, "classes": [label.name for label in project.labels.all()],
            "published_version": published.version if published else None,
            "effective_version": effective.version if effective else None}


@api.get("/projects/{project_id}/versions")
def version_list(request, project_id: int):
    project = _project_for_key(request, project_id, need=roles.VIEWER)
    return [_run_json(run, project) for run in training_selectors.versions_for_project(project=project)]


@api.get("/projects/{project_id}/versions/{version}")
def version_detail(request, project_id: int, version: int):
    project = _project_for_key(request, project_id, need=roles.VIEWER)
    run = training_selectors.model_run(project=project, version=version)
    if run is None:
        raise Http404(f"This project has no version {version}.")
    return _run_json(run, project)


@api.get("/projects/{project_id}/runs/{run_id}")
def run_detail(request, project_id: int, run_id: int):
    project = _project_for_key(request, project_id, need=roles.VIEWER)
    run = project.runs.filter(pk=run_id).first()
    if run is None:
        raise Http404("This project has no such run.")
    return _run_json(checks.run_check(run=run), project)


def _run_json(run: TrainingRun, project) -> dict:
    metrics = run.metrics or {}
    return {"run": run.pk, "version": run.version, "status": run.status, "progress": run.progress,
            "stage": run.stage, "base": run.base_model, "preset": run.preset, "error": run.error,
            "published": project.published_run_id == run.pk, "created_at": run.created_at,
            "finished_at": run.finished_at,
            "metrics": {k: metrics.get(k) for k in ("accuracy", "n_train", "n_val", "per_class", "strategy")}}


@api.get("/projects/{project_id}/monitoring", response={200: dict, **_errors(401, 404, 422, 429)})
def project_monitoring(request, project_id: int,
                       days: int = Query(monitoring.DEFAULT_DAYS, description="The period: the last N days, today included (1-365).")):
    """The monitoring page's figures for the last `days` days: predictions (the count), by_day,
    class_mix, confidence, abstained_rate, drift (this week's), reviews and live_accuracy."""
    project = _project_for_key(request, project_id, need=roles.VIEWER)
    if not 1 <= days <= monitoring.MAX_DAYS:
        raise HttpError(422, f"days must be between 1 and {monitoring.MAX_DAYS}.")
    return monitoring.monitoring(project, days=days)


# --- predicting -------------------------------------------------------------------------------

HEATMAP_HELP = ("Also return where the model looked for its predicted class: `heatmap_png_base64`, a PNG "
                "(base64) of the image as the model resized it, coloured over the centre square it saw "
                "and darkened outside it (about 15 ms and 80 KB more per image).")


SIMILAR_HELP = (f"Also return the k (at most {serving_similar.API_MAX}) training images most like each image: "
                "`similar`, a list of {image, label, similarity} (the image's id, its class, the cosine "
                "similarity of their features), most similar first. 0 (the default): none.")
SimilarQuery = Query(0, ge=0, le=serving_similar.API_MAX, description=SIMILAR_HELP)


PREDICT_RESPONSES = {200: PredictionOut | list[PredictionOut | RefusedFileOut], **_errors(400, 401, 404, 409, 413, 415, 429)}


@api.post("/projects/{project_id}/predict", response=PREDICT_RESPONSES, openapi_extra=_images_body(raw=True))
def predict_published(request, project_id: int, heatmap: bool = Query(False, description=HEATMAP_HELP),
                      similar: int = SimilarQuery):
    """The published version (else the latest). Body: the raw image, or multipart with files."""
    project = _project_for_key(request, project_id, need=roles.VIEWER, hits=lambda: _image_count(request))
    return _predict(request, project, version=None, heatmap=heatmap, similar=similar)


@api.post("/projects/{project_id}/versions/{version}/predict", response=PREDICT_RESPONSES,
          openapi_extra=_images_body(raw=True))
def predict_version(request, project_id: int, version: int, heatmap: bool = Query(False, description=HEATMAP_HELP),
                    similar: int = SimilarQuery):
    project = _project_for_key(request, project_id, need=roles.VIEWER, hits=lambda: _image_count(request))
    return _predict(request, project, version=version, heatmap=heatmap, similar=similar)


def _image_count(request) -> int:
    return len(request.FILES.getlist("files")) + len(uploads.refused_files(request)) if _is_multipart(request) else 1


def _log_source(request) -> prediction_log.Source:
    """The prediction log's "source name": the key's name, or the token's user and name."""
    return prediction_log.api(request.auth, user=caller_user(request))


def _is_multipart(request) -> bool:
    return request.content_type == "multipart/form-data"


def _predict(request, project, version, heatmap=False, similar=0):
    run = training_selectors.model_run(project=project, version=version)
    if run is None:
        raise Http404("This project has no trained version yet." if version is None else f"This project has no version {version}.")
    if not _is_multipart(request):
        checked = _checked(request.headers.get("X-Filename", "image"), _raw_body(request))
        _count_sizes(request, [checked])
        return predictions.predict_checked(run, [checked], heatmap=heatmap, similar=similar,
                                           source=_log_source(request))[0]
    items, failures = _checked_files(request)
    _count_sizes(request, items)
    if not items:
        raise failures[0][1] if len(failures) == 1 else HttpError(failures[0][1].status_code, " ".join(
            f"{name}: {exc}" for name, exc in failures))
    # One list: the answers, then the files refused (each with its reason and the status it would have had alone).
    return predictions.predict_checked(run, items, heatmap=heatmap, similar=similar,
                                       source=_log_source(request)) + [
        {"file": name, "error": str(exc), "status": exc.status_code} for name, exc in failures]


def _count_sizes(request, items) -> None:
    """Each image counted once before it was read; a large one owes more (throttle.image_weight)."""
    extra = throttle.extra_weight(checked.width * checked.height for _, checked in items)
    if extra:
        _api_limit().hit(caller_bucket(request.auth), extra)


def _raw_body(request) -> bytes:
    """The request body, refused (413) from its declared length before it is read."""
    cap = library_images.max_upload_bytes()
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > cap:
        raise HttpError(413, intake.too_large_message(declared, cap, what="image"))
    data = request.read(cap + 1)
    if len(data) > cap:
        raise HttpError(413, f"The image is larger than the limit of {cap / intake.MB:g} MB.")
    if not data:
        raise HttpError(400, "Send the image as the request body, or several as multipart form files named “files”.")
    return data


def _checked(name: str, data: bytes) -> tuple[str, intake.CheckedImage]:
    """The same checks as uploads: 413 for too large (bytes or pixels), 415 for anything not an image."""
    try:
        return name, intake.check_image(data, max_bytes=library_images.max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        raise _refusal(exc) from None


def _refusal(exc: intake.ImageRejected) -> HttpError:
    return HttpError(413 if exc.too_large else 415, str(exc))


def _checked_files(request):
    items, failures = [], [(name, HttpError(413, reason)) for name, reason in uploads.refused_files(request)]
    for upload in request.FILES.getlist("files"):
        try:
            intake.check_size(upload.size, library_images.max_upload_bytes())
            items.append(_checked(upload.name, upload.read()))
        except intake.ImageRejected as exc:  # its declared size: too large, or an empty file
            failures.append((upload.name, _refusal(exc)))
        except HttpError as exc:
            failures.append((upload.name, exc))
    if not items and not failures:
        raise HttpError(400, "Send one or more images as multipart form files named “files”.")
    return items, failures


# --- the prediction log and feedback ------------------------------------------------------------

class ReviewOut(Schema):
    label: str
    source: str
    at: datetime


class LoggedPredictionOut(Schema):
    id: int
    created_at: datetime
    version: int
    source: str
    source_name: str
    file: str
    top: LabelProbability
    prediction_set: list[str]
    abstained: bool
    unfamiliar: bool
    novelty: float | None
    seen_in_training: bool
    audit: bool
    review: ReviewOut | None


class FeedbackIn(Schema):
    label: str


def _logged_json(prediction: Prediction) -> dict:
    review = None if not prediction.review_label else {
        "label": prediction.review_label, "source": prediction.review_source, "at": prediction.reviewed_at}
    return {"id": prediction.pk, "created_at": prediction.created_at, "version": prediction.version,
            "source": prediction.source, "source_name": prediction.source_name, "file": prediction.file_name,
            "top": {"label": prediction.top_label, "probability": prediction.probability},
            "prediction_set": prediction.prediction_set, "abstained": prediction.abstained,
            "unfamiliar": prediction.unfamiliar, "novelty": prediction.novelty,
            "seen_in_training": prediction.seen_in_training, "audit": prediction.audit, "review": review}


@api.get("/projects/{project_id}/predictions", response={200: list[LoggedPredictionOut], **_errors(401, 404, 422, 429)})
def prediction_list(request, project_id: int,
                    since: datetime | None = Query(None, description="Only predictions made after this ISO 8601 time (UTC when it names no zone)."),
                    limit: int = Query(100, ge=1, le=prediction_log.LIST_MAX, description="At most this many, newest first.")):
    """The prediction log, newest first: every prediction of the project (page, API, batch)."""
    project = _project_for_key(request, project_id, need=roles.VIEWER)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return [_logged_json(p) for p in prediction_log.predictions_list(project=project, since=since, limit=limit)]


@api.post("/predictions/{prediction_id}/feedback", response={200: LoggedPredictionOut, **_errors(400, 401, 404, 429)})
def prediction_feedback(request, prediction_id: int, payload: FeedbackIn):
    """The true class of a logged prediction, from the client's own system (a later lab result):
    it counts as a review (review source "api"); a later review replaces it."""
    project_id = prediction_project_id(request, prediction_id)
    try:  # the allowance, counted first: probing ids is a hit too
        _project_for_key(request, project_id, need=roles.LABELLER)
    except Http404:
        raise Http404("No such prediction.") from None  # a stranger learns nothing of the project
    prediction = prediction_log.prediction_get(pk=prediction_id, project_id=project_id)
    if prediction is None:
        raise Http404("No such prediction for this key.")
    try:
        prediction_log.feedback_record(prediction=prediction, label=payload.label, by=caller_user(request))
    except errors.ServiceError as exc:
        raise HttpError(400, str(exc)) from None
    return _logged_json(prediction)


# --- training side ----------------------------------------------------------------------------

@api.post("/projects/{project_id}/classes/{name}/images", response={200: UploadOut, **_errors(400, 401, 404, 413, 429)},
          openapi_extra=_images_body(raw=False))
def images_add(request, project_id: int, name: str):
    """Add images to a class: the upload page's checks, quotas and per-file report."""
    project = _project_for_key(request, project_id, need=roles.LABELLER, hits=lambda: _image_count(request))
    label = project.labels.filter(name__in={name, library_projects.label_name(name)}).first()  # "a<b" is stored "a‹b"
    if label is None:
        raise Http404(f"This project has no class “{name}”.")
    outcomes = library_images.images_add_uploaded(project=project, label=label, uploads=request.FILES.getlist("files"),
                                                  refused=uploads.refused_files(request))
    if not outcomes:
        raise HttpError(400, "Send one or more images as multipart form files named “files”.")
    if any(o.status == "added" for o in outcomes):
        library_images.features_schedule(project=project)
    return {"results": [{"file": o.name, "status": o.status, "message": o.error} for o in outcomes],
            "added": sum(o.status == "added" for o in outcomes)}


class TrainIn(Schema):
    preset: str = "fast"
    base: str = "efficientnet_lite0"


@api.post("/projects/{project_id}/train", response={202: dict, **_errors(401, 404, 409, 422, 429)})
def train(request, project_id: int, payload: TrainIn | None = None):
    project = _project_for_key(request, project_id, need=roles.EDITOR)
    payload = payload or TrainIn()
    if payload.preset not in ("fast", "best"):
        raise HttpError(422, "preset must be “fast” or “best”.")
    try:
        run = training_runs.training_start(project=project, base_model=payload.base, preset=payload.preset, config={})
    except errors.ServiceError as exc:
        raise HttpError(409, str(exc)) from None
    return api.create_response(request, _run_json(run, project), status=202)

