"""Views for model versions, their export bundles and the project's API keys.

Like views.py: the first line of each is the access check through selectors.
"""
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, HttpResponseNotFound
from django.utils.cache import patch_vary_headers
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from transferapp import batch, blobs, exports, predictions, reports, selectors, services, throttle, uploads, versiondiff
from transferapp.engine import imaging

CSV_TYPE = "text/csv; charset=utf-8"


@login_required
@require_POST
def run_publish(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    try:
        services.run_publish(run=run)
        messages.success(request, f"Version {run.version} is now the project's model (predict page, API and export).")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect(run.project)


@login_required
def version_compare(request, pk):
    """Two versions side by side: the evaluation images whose answer changed, and per-class figures
    on the images both scored. htmx swaps only the comparison when a select changes."""
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    asked = request.GET.get("before", ""), request.GET.get("after", "")
    before, after = selectors.compared_versions(project=project, before=asked[0], after=asked[1])
    context = {"project": project, "versions": list(selectors.versions_for_project(project=project)),
               "before": before, "after": after,
               "not_found": any(asked) and (str(before and before.version), str(after and after.version)) != asked}
    if before and after and before != after:
        context["diff"] = _version_diff(project, before, after)
    # A history restore (Back after a swap, cache missed) asks as htmx too but needs the whole page.
    partial = request.htmx and not request.htmx.history_restore_request
    response = render(request, "transferapp/version_compare.html" + ("#diff" if partial else ""), context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _version_diff(project, before, after) -> dict:
    classes = [before.metrics.get("classes", before.classes), after.metrics.get("classes", after.classes)]
    (old, old_source), (new, new_source) = (versiondiff.image_predictions(run.metrics or {}, names)
                                            for run, names in zip((before, after), classes))
    found = versiondiff.compare(old, new)
    common, names = found["common"], versiondiff.class_names(*classes)
    images = selectors.images_by_pk(project=project, pks=[int(k) for k in old.keys() | new.keys() if k.isdigit()])
    figures = [versiondiff.figures(preds, common, names) for preds in (old, new)]
    return {**found, "n_common": len(common), "sources": {"before": old_source, "after": new_source},
            "groups": [_group_rows(name, found["groups"][name], images) for name in versiondiff.GROUPS],
            "accuracy": [f["accuracy"] for f in figures],
            "per_class": [{"name": n, "known": [n in c for c in classes],
                           "before": figures[0]["per_class"][n], "after": figures[1]["per_class"][n]} for n in names]}


GROUP_TITLES = {"fixed": ("Fixed", "wrong before, right now"), "broken": ("Broken", "right before, wrong now"),
                "still_wrong": ("Changed but still wrong", "a different wrong answer")}


def _group_rows(name, rows, images) -> dict:
    title, meaning = GROUP_TITLES[name]
    shown = [{**row, "image": images.get(int(row["key"])) if row["key"].isdigit() else None}
             for row in rows[:versiondiff.SHOWN_PER_GROUP]]
    return {"name": name, "title": title, "meaning": meaning, "count": len(rows), "rows": shown}


@login_required
@require_POST
def run_export(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    try:
        status = exports.run_export(run=run)
    except exports.ExportError as exc:
        messages.error(request, str(exc))
        return redirect(run)
    if status["passed"]:
        report = status["report"]
        messages.success(request, f"Export ready: its self-test predicted {report['images']} images exactly as the app "
                                  f"does (largest difference {report['max_abs_difference']:.1e}).")
    else:
        messages.error(request, "The export failed its self-test, so it is not offered for download: "
                                f"{status['report']}")
    return redirect(run)


@login_required
def run_export_download(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    path = exports.bundle_zip(run)
    if path is None:
        raise Http404("No export that passed its self-test")
    name = exports.export_status(run)["name"]
    if blobs.s3_mode():  # the bucket sends it (S3_PUBLIC_URL), or the app streams it from there
        return bucket_file(f"{run.artifact_dir}/export/bundle.zip", f"{name}.zip")
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{name}.zip", content_type="application/zip")


@login_required
@require_POST
def api_key_create(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    _, key = services.api_key_create(project=project, name=request.POST.get("name", ""))
    # Shown on this one response only: the database keeps its hash.
    response = render(request, "transferapp/api_key_created.html", {"project": project, "new_key": key})
    response["Cache-Control"] = "no-store"  # the secret must not stay in a cache or the history
    return response


@login_required
@require_POST
def api_key_revoke(request, pk):
    key = selectors.api_key_get_for_user(user=request.user, pk=pk)
    services.api_key_revoke(key=key)
    messages.success(request, f"Key {key.prefix}… revoked: requests with it are now refused.")
    return redirect(key.project)


@login_required
@require_POST
@uploads.accepts_archives
def predict_batch(request, pk):
    """Many images or zips in, predicted with the project's model (published, else latest): a small
    batch comes back as a CSV at once, a large one goes to the worker (progress on the predict page)."""
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    run = selectors.model_run(project=project)
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
    rows += batch.predict_rows(run, batch.named_images(files), sizes=sizes)
    throttle.predictions_counted(request.user, len(rows) + throttle.extra_weight(sizes))
    response = HttpResponse(batch.to_csv(rows), content_type=CSV_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{_csv_name(project, run.version)}"'
    return response


def _predict_batch_in_worker(request, project, run, files):
    try:
        row = services.batch_create(project=project, run=run, uploads=files, refused=uploads.refused_files(request))
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("predict", pk=project.pk)
    return redirect(f"{reverse('predict', args=[project.pk])}?batch={row.pk}#batch-live")


def _csv_name(project, version) -> str:
    return f"{slugify(project.name) or 'project'}-v{version}-predictions.csv"


@login_required
def batch_detail(request, pk):
    """The batch's live panel (htmx polls it until it ends: 286); otherwise the predict page shows it."""
    row = services.batch_check(batch=selectors.batch_get_for_user(user=request.user, pk=pk))
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
    if not request.GET.get("batch", "").isdigit():
        return panel
    row = services.batch_check(batch=selectors.batch_get_for_user(user=request.user, pk=int(request.GET["batch"])))
    if row.project_id != project.pk:
        raise Http404("No such batch in this project")
    return {**panel, **batch_context(row, request.GET.get("order", ""))}


@login_required
def batch_download(request, pk):
    row = selectors.batch_get_for_user(user=request.user, pk=pk)
    if row.status != row.Status.DONE or not row.csv_path:
        raise Http404("This batch has no CSV (not finished, or failed)")
    if blobs.in_bucket(row.csv_path):
        return bucket_file(row.csv_path, _csv_name(row.project, row.version), content_type=CSV_TYPE)
    if not Path(row.csv_path).exists():
        raise Http404("This batch's CSV was deleted after its retention time")
    return FileResponse(open(row.csv_path, "rb"), as_attachment=True, filename=_csv_name(row.project, row.version),
                        content_type=CSV_TYPE)


def bucket_file(key: str, filename: str = "", content_type: str | None = None):
    """A file of the bucket for a user already checked to own it: a short-lived presigned redirect
    (S3_PUBLIC_URL set), or streamed through in chunks, never whole in memory."""
    url = blobs.presigned_url(key, filename, content_type)
    if url:
        response = redirect(url)
        response["Cache-Control"] = "private, no-store"  # the URL expires; the next view signs a new one
        return response
    try:
        body, size = blobs.open_stream(key)
    except FileNotFoundError:
        raise Http404("File missing") from None
    response = FileResponse(body, as_attachment=bool(filename), filename=filename or Path(key).name, content_type=content_type)
    response["Content-Length"] = str(size)
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
def run_heatmap(request, pk, digest, class_index):
    """Where the run's model looked for a class in an image predicted on the predict page (kept
    by content hash for a while: those images are not stored)."""
    run = selectors.run_get_for_user(user=request.user, pk=pk)
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
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    image = selectors.images_by_pk(project=run.project, pks=[image_pk]).get(image_pk)
    if image is None:
        raise Http404("No such image in this project")
    try:
        return _png(predictions.stored_heatmap_png(run, image, class_index))
    except (FileNotFoundError, imaging.DecodeError):
        raise Http404("This image's file is missing or unreadable") from None
    except predictions.PredictionError as exc:
        raise Http404(str(exc)) from None


def _png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    # The URL names the run, the image's content and the class: a reload is served by the browser.
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _report_run(request, pk):
    """The owner's version, else 404; a run that is not a finished version has no report."""
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    try:
        return reports.reportable_run(run)
    except reports.ReportUnavailable:
        raise Http404("No training report for this run") from None


@login_required
def run_report(request, pk):
    """The training report as one self-contained page; ?download=1 saves it as a file."""
    run = _report_run(request, pk)
    response = HttpResponse(reports.render_html(run), content_type="text/html; charset=utf-8")
    # The page needs nothing from anywhere: a policy that allows nothing else proves it in the browser.
    response["Content-Security-Policy"] = REPORT_POLICY
    if request.GET.get("download"):
        response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=reports.file_name(run, "html"))
    return response


REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"


@login_required
def run_report_pdf(request, pk):
    run = _report_run(request, pk)
    response = HttpResponse(reports.render_pdf(run), content_type="application/pdf")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=reports.file_name(run, "pdf"))
    return response


@login_required
def run_report_manifest(request, pk):
    """Every image the version used: id, file name, class, role and SHA-256."""
    run = _report_run(request, pk)
    response = HttpResponse(reports.manifest(run)[0], content_type=CSV_TYPE)
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=reports.file_name(run, "csv").replace("-report.csv", "-manifest.csv"))
    return response


@login_required
@require_POST
def project_intended_use(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    try:
        services.project_set_intended_use(project=project, text=request.POST.get("intended_use", ""))
        messages.success(request, "Saved: the training reports print it under “Intended use and limitations”.")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect(f"{project.get_absolute_url()}#intended-use")
