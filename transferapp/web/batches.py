"""Batch predictions: sent, watched, downloaded as CSV."""

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from transferapp.accounts import roles, throttle
from transferapp.jobs import checks
from transferapp.library import errors
from transferapp.library import selectors as library_selectors
from transferapp.serving import batch, batch_runs, prediction_log
from transferapp.serving import selectors as serving_selectors
from transferapp.storage import blobs
from transferapp.training import selectors as training_selectors
from transferapp.web import bucket, uploads


@login_required
@require_POST
@uploads.accepts_archives
def predict_batch(request, pk):
    """Many images or zips in, predicted with the project's model (published, else latest): a small
    batch comes back as a CSV at once, a large one goes to the worker (progress on the predict page)."""
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    run = training_selectors.model_run(project=project)
    files = request.FILES.getlist("files")
    if run is None or not files:
        messages.error(request, "Train a model first." if run is None else "Choose images, a zip or a folder first.")
        return redirect("predict", pk=project.pk)
    refusal = throttle.prediction_refusal(request.user, 0)  # before any work; counted below, once known
    if refusal:
        messages.error(request, refusal)
        return redirect("predict", pk=project.pk)
    if batch.runs_in_worker(files):
        return _predict_batch_in_worker(request, project, run, files)
    rows = [{"file": name, "error": reason} for name, reason in uploads.refused_files(request)]
    sizes = []
    rows += batch.predict_rows(run, batch.named_images(files), sizes=sizes,
                               source=prediction_log.batch(batch.source_name(files)))
    throttle.predictions_counted(request.user, len(rows) + throttle.extra_weight(sizes))
    response = HttpResponse(batch.to_csv(rows), content_type=bucket.CSV_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{_csv_name(project, run.version)}"'
    return response


def _predict_batch_in_worker(request, project, run, files):
    try:
        row = batch_runs.batch_create(project=project, run=run, uploads=files, refused=uploads.refused_files(request))
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("predict", pk=project.pk)
    return redirect(f"{reverse('predict', args=[project.pk])}?batch={row.pk}#batch-live")


def _csv_name(project, version) -> str:
    return f"{slugify(project.name) or 'project'}-v{version}-predictions.csv"


@login_required
def batch_detail(request, pk):
    """The batch's live panel (htmx polls it until it ends: 286); otherwise the predict page shows it."""
    row = checks.batch_check(batch=serving_selectors.batch_get_for_user(user=request.user, need=roles.VIEWER, pk=pk))
    if request.htmx and request.GET.get("live"):
        response = render(request, "transferapp/_batch_live.html", batch_context(row, request.GET.get("order", "")))
        if row.is_finished:
            response.status_code = 286  # htmx: stop polling
        return response
    return redirect(f"{reverse('predict', args=[row.project_id])}?batch={row.pk}#batch-live")


def batch_context(row, order: str) -> dict:
    """What the batch panel shows: progress, or the first rows of the result in `order`."""
    order = order if order in batch.ORDERS else "file"
    finished = row.status == row.Status.DONE and row.csv_path
    return {"batch": row, "order": order, "orders": batch.ORDERS, "order_words": batch.ORDERS[order],
            "predicted": row.done - row.refused, "rows": batch.table_rows(row, order) if finished else [],
            "kept_days": settings.BATCH_KEPT_DAYS}


def batch_panel(request, project) -> dict:
    """For the predict page: the batch named by ?batch= (the owner's, of this project) and the recent ones."""
    panel = {"recent_batches": list(project.batches.all()[:5]), "batch_inline_max": settings.BATCH_INLINE_MAX_IMAGES,
             "max_upload_files": settings.DATA_UPLOAD_MAX_NUMBER_FILES}
    batch_pk = library_selectors.parse_id(request.GET.get("batch", ""))
    if batch_pk is None:
        return panel
    row = checks.batch_check(batch=serving_selectors.batch_get_for_user(user=request.user, need=roles.VIEWER, pk=batch_pk))
    if row.project_id != project.pk:
        raise Http404("No such batch in this project")
    return {**panel, **batch_context(row, request.GET.get("order", ""))}


@login_required
def batch_download(request, pk):
    row = serving_selectors.batch_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    if row.status != row.Status.DONE or not row.csv_path:
        raise Http404("This batch has no CSV (not finished, or failed)")
    if blobs.in_bucket(row.csv_path):
        return bucket.bucket_file(row.csv_path, _csv_name(row.project, row.version), content_type=bucket.CSV_TYPE)
    if not Path(row.csv_path).exists():
        raise Http404("This batch's CSV was deleted after its retention time")
    return FileResponse(open(row.csv_path, "rb"), as_attachment=True, filename=_csv_name(row.project, row.version),
                        content_type=bucket.CSV_TYPE)
