"""Function views: the first line of each is the access check (selectors.*_get_for_user)."""
import io

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from transferapp import blobs, charts, estimates, exports, forms, heatmaps, model_views, predictions, quotas, selectors, services, throttle, trust, uploads, zipstream
from transferapp.engine import imaging
from transferapp.engine.zoo import get_base, list_bases
from transferapp.models import TrainingRun


def signup(request):
    if not settings.ALLOW_SIGNUP:
        return render(request, "transferapp/signup.html", {"closed": True}, status=403)
    refusal = throttle.signup_refusal(request) if request.method == "POST" else ""
    if refusal:
        return HttpResponse(refusal, status=429, content_type="text/plain; charset=utf-8")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        throttle.signup_counted(request)
        login(request, user)
        messages.success(request, "Welcome! Create your first project to get started.")
        return redirect("project_list")
    return render(request, "transferapp/signup.html", {"form": form})


@login_required
def project_list(request):
    form = forms.NameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(owner=request.user, name=form.cleaned_data["name"])
        except services.ServiceError as exc:
            form.add_error("name", str(exc))
        else:
            return redirect(project)
    projects = selectors.project_overviews(user=request.user)
    context = {"projects": projects, "form": form, "usage": quotas.usage_text(request.user)}
    return render(request, "transferapp/project_list.html", context)


@login_required
def project_detail(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    runs = [services.run_check(run=run) for run in selectors.runs_for_project(project=project)]
    duplicate_groups = selectors.near_duplicate_images(project=project)
    context = {
        "project": project,
        "labels": selectors.labels_with_previews(project=project),
        "runs": runs,
        "imports": [services.import_check(job=job) for job in project.imports.all()[:5]],
        "problems": selectors.training_problems(project=project),
        "warnings": selectors.training_warnings(project=project, groups=duplicate_groups),
        "small_data_note": selectors.small_data_note(project=project),
        "duplicate_groups": duplicate_groups,
        "bases": list_bases(),
        "train_form": forms.TrainForm(),
        "no_mirroring": selectors.project_no_mirroring(project=project),
        "has_grayscale": selectors.project_has_grayscale(project=project),
        "group_choices": project.GroupBy.choices,
        "class_order": selectors.project_class_order(project=project),
        "versions": selectors.versions_for_project(project=project),
        "current_run": selectors.model_run(project=project),
        "api_keys": selectors.api_keys_for_project(project=project),
    }
    return render(request, "transferapp/project_detail.html", context)


@login_required
@require_POST
def project_image_options(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    level = request.POST.get("group_folder_level", "1")
    _apply(request, services.project_set_image_options, project=project,
           no_mirroring=request.POST.get("no_mirroring") == "on", group_by=request.POST.get("group_by", ""),
           group_folder_level=int(level) if level.isdigit() else 0)
    return redirect(project)


@login_required
@require_POST
def project_class_order(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    _apply(request, services.project_set_class_order, project=project,
           ordered=request.POST.get("ordered_classes") == "on", order_text=request.POST.get("class_order", ""))
    return redirect(f"{project.get_absolute_url()}#class-order")


@login_required
@require_POST
def project_rename(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    _apply(request, services.project_rename, project=project, name=request.POST.get("name", ""))
    return redirect(project)


@login_required
@require_POST
def project_delete(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    if not _apply(request, services.confirm_name, typed=request.POST.get("confirm_name", ""), name=project.name, what="project"):
        return redirect(project)
    services.project_delete(project=project)
    messages.success(request, f"Project “{project.name}” deleted.")
    return redirect("project_list")


@login_required
@require_POST
def label_create(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    typed = request.POST.get("name", "")
    label = _apply(request, services.label_create, project=project, name=typed)
    _say_if_renamed(request, typed, label)
    return redirect(label or project)


@login_required
def label_detail(request, project_pk, pk):
    label = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=pk)
    return _label_page(request, label, partial=bool(request.htmx))


def _label_page(request, label, *, partial: bool):
    context = {"project": label.project, "label": label, "images": label.images.all(), "undo": _pop_undo(request, label),
               "other_labels": selectors.other_labels(label=label)}
    if request.GET.get("suspects"):  # the latest run's suspected mislabels in this class, most suspect first
        run = selectors.latest_finished_run(project=label.project)
        found = trust.suspects(run, limit=100, label=label) if run else []
        context.update(images=[row["image"] for row in found], suspects_only=True)
    if partial:
        return render(request, "transferapp/label_detail.html#image-grid", context)
    return render(request, "transferapp/label_detail.html", context)


def _offer_undo(request, label, images) -> None:
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
    label = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=pk)
    typed = request.POST.get("name", "")
    _say_if_renamed(request, typed, _apply(request, services.label_rename, label=label, name=typed))
    return redirect(label)


def _say_if_renamed(request, typed: str, label) -> None:
    if label is not None and label.name != typed.strip():
        messages.info(request, f"Saved as “{label.name}”: in class names “<” and “>” become “‹” and “›”, "
                               "and control characters are left out.")


@login_required
@require_POST
def label_delete(request, project_pk, pk):
    label = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=pk)
    if not _apply(request, services.confirm_name, typed=request.POST.get("confirm_name", ""), name=label.name, what="class"):
        return redirect(label)
    services.label_delete(label=label)
    messages.success(request, f"Class “{label.name}” and its images deleted.")
    return redirect(label.project)


@login_required
@require_POST
def label_bulk(request, project_pk, pk):
    """Move, delete, set aside for testing or give back to training the images selected in a class grid."""
    label = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=pk)
    images = selectors.images_in_label(label=label, pks=request.POST.getlist("images"))
    action = request.POST.get("action")
    if not images:
        messages.error(request, "Select one or more images first.")
    elif action in ("test", "train"):
        changed = services.images_set_aside(images=images, for_testing=action == "test")
        messages.success(request, f"Set aside {changed} image(s) for testing: no run trains on them or chooses with "
                                  "them; each run scores its final model on them." if action == "test"
                         else f"{changed} image(s) will be used for training again.")
    elif action == "delete":
        services.images_delete(images=images)
        _offer_undo(request, label, images)
    else:
        target_pk = request.POST.get("target", "")
        target = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=int(target_pk) if target_pk.isdigit() else 0)
        moved = services.images_move(images=images, label=target)
        messages.success(request, f"Moved {moved} image(s) to “{target.name}”.")
    return redirect(label)


@login_required
@require_POST
def label_upload(request, project_pk, pk):
    label = selectors.label_get_for_user(user=request.user, project_pk=project_pk, pk=pk)
    files = request.FILES.getlist("files")
    outcomes = [services.UploadOutcome(name=name, error=reason) for name, reason in uploads.refused_files(request)]
    outcomes += [services.image_add_uploaded(label=label, uploaded=f) for f in files]
    if any(outcome.image for outcome in outcomes):
        services.features_schedule(project=label.project)
    if _is_script_request(request):
        return _upload_json(outcomes)
    _upload_messages(request, outcomes)
    return redirect(label)


def _is_script_request(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or bool(request.htmx)


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


@login_required
def image_thumbnail(request, pk):
    image = selectors.image_get_for_user(user=request.user, pk=pk)
    field = image.thumbnail or image.file
    return _private_file(field)


@login_required
def image_file(request, pk):
    image = selectors.image_get_for_user(user=request.user, pk=pk)
    if image.file.name.endswith(".dcm"):
        return _rendered_dicom(image.file)
    return _private_file(image.file)


def _rendered_dicom(field):
    """The picture of a DICOM file as a PNG: the stored file also holds the patient's identifying
    tags, which the browser must never receive."""
    try:
        with field.open("rb") as f:
            rgb = imaging.load_rgb(f.read())
    except FileNotFoundError:
        raise Http404("File missing") from None
    except imaging.DecodeError as exc:
        return HttpResponse(str(exc), status=422, content_type="text/plain")
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    response = HttpResponse(out.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _private_file(field):
    """A stored file for its owner (checked by the caller): from the disk, or from the bucket by a
    short-lived presigned redirect (S3_PUBLIC_URL set) or streamed through, never whole in memory."""
    if blobs.s3_mode():
        return model_views.bucket_file(field.name)
    try:
        response = FileResponse(field.open("rb"))
    except FileNotFoundError:
        raise Http404("File missing") from None
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_POST
def image_delete(request, pk):
    image = selectors.image_get_for_user(user=request.user, pk=pk)
    services.image_delete(image=image)
    if request.htmx and request.POST.get("card"):  # a card outside the class grid (the suspects gallery)
        return render(request, "transferapp/_image_deleted.html", {"image": image})
    _offer_undo(request, image.label, [image])
    if request.htmx:  # the grid again: its count and the undo bar change with it
        return _label_page(request, image.label, partial=True)
    return redirect(image.label)


@login_required
@require_POST
def images_restore(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    images = selectors.deleted_images_in_project(project=project, pks=request.POST.getlist("images"))
    restored = services.images_restore(images=images)
    if restored:
        messages.success(request, f"Restored {restored} image{'' if restored == 1 else 's'}.")
    else:
        messages.error(request, "Those images can no longer be restored.")
    return redirect(images[0].label if images else project)


@login_required
@require_POST
def image_relabel(request, pk):
    """One click from the "please look at these first" gallery: move the image to another class."""
    image = selectors.image_get_for_user(user=request.user, pk=pk)
    target_pk = request.POST.get("target", "")
    target = selectors.label_get_for_user(user=request.user, project_pk=image.project_id,
                                          pk=int(target_pk) if target_pk.isdigit() else 0)
    _apply(request, services.image_relabel, image=image, label=target)
    if request.htmx:
        return render(request, "transferapp/_suspect_done.html", {"moved_to": target})
    messages.success(request, f"Moved {image.original_name} to “{target.name}”.")
    return _back(request, image.label)


@login_required
@require_POST
def image_confirm(request, pk):
    """"Label is right": the image is not listed as a suspect again."""
    image = selectors.image_get_for_user(user=request.user, pk=pk)
    services.image_confirm_label(image=image)
    if request.htmx:
        return render(request, "transferapp/_suspect_done.html", {"moved_to": None})
    messages.success(request, f"{image.original_name}: label kept; it will not be listed again.")
    return _back(request, image.label)


def _back(request, fallback):
    """Return to the page the form came from (the results page's gallery), if it is ours."""
    target = request.POST.get("next", "")
    return redirect(target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else fallback)


@login_required
@require_POST
def run_trust_settings(request, pk):
    """The run's risk level and, for two classes, the positive class and decision threshold."""
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    try:
        if "alpha" in request.POST:
            services.run_set_alpha(run=run, alpha=float(request.POST["alpha"]))
        if "positive_class" in request.POST:
            raw = request.POST.get("threshold", "").strip()
            services.run_set_threshold(run=run, positive_class=request.POST["positive_class"],
                                       threshold=float(raw) if raw else None)
    except ValueError:
        messages.error(request, "Enter a number such as 0.1.")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Saved: predictions with this model use it from now on.")
    return redirect(run)


@login_required
@require_POST
def training_start(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    form = forms.TrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the training settings: " + form.errors.as_text())
        return redirect(project)
    data = form.cleaned_data
    run = _apply(
        request, services.training_start,
        project=project, base_model=data["base_model"], preset=data["preset"], config=form.engine_config(),
    )
    return redirect(run or project)


@login_required
def run_detail(request, pk):
    run = services.run_check(run=selectors.run_get_for_user(user=request.user, pk=pk))
    if request.htmx and request.GET.get("live"):  # the 2-second poll: the live panel only
        response = render(request, "transferapp/run_detail.html#live", _run_context(run))
        if run.is_finished:
            response["HX-Refresh"] = "true"  # the full page then shows the results
            response.status_code = 286  # htmx: stop polling
        return response
    return render(request, "transferapp/run_detail.html", results_context(run, cell=request.GET.get("cell", "")))


def results_context(run: TrainingRun, cell: str = "") -> dict:
    """Everything the finished results page shows; the training report (reports.py) renders it too."""
    context = _run_context(run)
    context.update(trust.run_context(run, cell=cell),
                   export=exports.export_status(run) if run.status == TrainingRun.Status.SUCCEEDED else None)
    return context


def _run_context(run: TrainingRun) -> dict:
    history = run.history or []
    metrics = run.metrics or {}
    classes = metrics.get("classes", run.classes)
    mistakes = metrics.get("mistakes", [])
    # Keys are image pks as text (the engine's keys); an image deleted since shows as a placeholder.
    pks = [int(m["key"]) if str(m["key"]).isdigit() else None for m in mistakes]
    images = selectors.images_by_pk(project=run.project, pks=[pk for pk in pks if pk is not None])
    return {
        "run": run,
        "project": run.project,
        "loss_chart": charts.line_chart(_series(history, "loss"), y_label="loss"),
        "accuracy_chart": charts.line_chart(_series(history, "accuracy"), y_max=1.0, y_label="accuracy"),
        "curve_chart": charts.learning_curve_chart(metrics.get("learning_curve")),
        "two_stages": len({row.get("stage") for row in history}) > 1,
        "confusion": charts.confusion_rows(metrics.get("confusion", []), classes),
        "per_class_rows": charts.per_class_rows(metrics.get("per_class", {}), classes),
        "base_label": _base_label(run.base_model),
        "mistakes": [{**m, "image": images.get(pk), "heatmaps": _mistake_heatmaps(run, classes, m, pk)}
                     for m, pk in zip(mistakes, pks)],
        "waiting_for_worker": run.status == TrainingRun.Status.QUEUED and not selectors.workers_online(),
        "time_left": estimates.time_left(run, timezone.now()),
        "settings_used": charts.settings_rows(run.config),
    }


def _mistake_heatmaps(run: TrainingRun, classes: list[str], mistake: dict, pk: int | None) -> list[dict]:
    """The gallery's heat-map choices: the wrong prediction first, then the true class."""
    if pk is None:
        return []
    return heatmaps.choices(classes, [mistake["predicted"], mistake["true"]],
                            lambda i: reverse("run_image_heatmap", args=[run.pk, pk, i]))


def _base_label(name: str) -> str:
    try:
        return get_base(name).label
    except ValueError:
        return name


def _series(history: list[dict], metric: str) -> dict[str, list[float]]:
    return {
        f"train {metric}": [h[f"train_{metric}"] for h in history if h.get(f"train_{metric}") is not None],
        f"val {metric}": [h[f"val_{metric}"] for h in history if h.get(f"val_{metric}") is not None],
    }


@login_required
@require_POST
def run_cancel(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    services.run_cancel(run=run)
    return redirect(run)


@login_required
@require_POST
def run_retry(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    new_run = _apply(
        request, services.training_start,
        project=run.project, base_model=run.base_model, preset=run.preset, config=run.config,
    )
    return redirect(new_run or run)


@login_required
@require_POST
def run_delete(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    if not run.is_finished:
        messages.error(request, "Cancel the run before deleting it.")
        return redirect(run)
    services.run_delete(run=run)
    messages.success(request, "Run deleted.")
    return redirect(run.project)


@login_required
def run_download(request, pk):
    run = selectors.run_get_for_user(user=request.user, pk=pk)
    # In bucket mode this process's copy of the model folder: the zip is streamed from local files.
    artifact_dir = blobs.artifact_folder(run) if run.status == TrainingRun.Status.SUCCEEDED else None
    if not artifact_dir or not artifact_dir.is_dir():
        raise Http404("No model for this run")
    name = f"{slugify(run.project.name) or 'model'}-run-{run.pk}"
    files = [(path, f"{name}/{path.name}") for path in sorted(artifact_dir.iterdir())
             if path.is_file() and not path.name.startswith(".")]  # not the mirror's own bookkeeping
    # Written while it is sent: a large base's weights are never held in memory whole.
    response = StreamingHttpResponse(zipstream.zip_chunks(files), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=f"{name}.zip")
    return response


@login_required
def predict(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    model_run = selectors.model_run(project=project)  # the published version, else the latest
    runs = _current_first(list(selectors.predictable_runs(project=project)), model_run)
    if request.method == "POST":
        return _predict_post(request, project, runs)
    context = {"project": project, "runs": runs, "model_run": model_run, **model_views.batch_panel(request, project)}
    return render(request, "transferapp/predict.html", context)


def _current_first(runs: list, current) -> list:
    """The project's model (published, else latest) first: the predict page's default choice."""
    return sorted(runs, key=lambda run: run != current) if current else runs


def _predict_post(request, project, runs):
    run = next((r for r in runs if str(r.pk) == request.POST.get("run")), runs[0] if runs else None)
    if run is None:
        return _refuse(request, "Train a model first: this project has no finished run yet.", request.path)
    refusal = throttle.prediction_refusal(request.user, len(request.FILES.getlist("files")))
    if refusal:
        return _refuse(request, refusal, request.path, status=429)
    results = [{"name": name, "error": reason} for name, reason in uploads.refused_files(request)]
    for upload in request.FILES.getlist("files"):
        try:
            result = predictions.predict_uploaded(run, upload, decoded=lambda pixels: throttle.predictions_counted(
                request.user, throttle.extra_weight([pixels])))
        except predictions.PredictionError as exc:
            results.append({"name": upload.name, "error": str(exc)})
            continue
        results.append({**result, "heatmaps": heatmaps.choices(
            result["classes"], [result["top"]], lambda i, d=result["digest"]: reverse("run_heatmap", args=[run.pk, d, i]))})
    if not results:
        return _refuse(request, "Choose one or more images first.", request.path)
    context = {"project": project, "runs": runs, "run": run, "results": results,
               "model_run": selectors.model_run(project=project), **model_views.batch_panel(request, project)}
    if _is_script_request(request):
        return render(request, "transferapp/predict.html#results", context)
    return render(request, "transferapp/predict.html", context)


def _refuse(request, message, redirect_to, status=400):
    """A refusal the uploader script shows next to the file, or a message on the next page."""
    if _is_script_request(request):
        return JsonResponse({"error": message}, status=status)
    messages.error(request, message)
    return redirect(redirect_to)


def _apply(request, service, **kwargs):
    """Run a service; show its refusal as a message instead of an error page."""
    try:
        return service(**kwargs)
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return None


def healthz(request):
    """For load balancers and the Docker healthcheck: the app answers and reaches its database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")


@login_required
@require_POST
@uploads.accepts_archives
def import_create(request, pk):
    project = selectors.project_get_for_user(user=request.user, pk=pk)
    archive = request.FILES.get("archive")
    if archive is None or not archive.name.lower().endswith(".zip"):
        return _refuse(request, "Choose a .zip file whose folders are your classes.", project)
    try:
        job = services.import_create(project=project, uploaded=archive)
    except services.ServiceError as exc:
        return _refuse(request, str(exc), project)
    if _is_script_request(request):
        return render(request, "transferapp/import_detail.html#live", {"job": job, "project": project, "rejected": []})
    return redirect(job)


@login_required
def import_detail(request, pk):
    job = services.import_check(job=selectors.import_get_for_user(user=request.user, pk=pk))
    context = {"job": job, "project": job.project, "rejected": selectors.import_skipped_rows(job=job)}
    if request.htmx and request.GET.get("live"):
        response = render(request, "transferapp/import_detail.html#live", context)
        if job.is_finished:
            response.status_code = 286  # htmx: stop polling
            response["HX-Trigger"] = "import-finished"  # the project page refreshes its counts
        return response
    return render(request, "transferapp/import_detail.html", context)
