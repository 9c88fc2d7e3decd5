"""The predict page: images dropped on it answered at once."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from transferapp.accounts import roles, throttle
from transferapp.library import selectors as library_selectors
from transferapp.serving import heatmaps as serving_heatmaps
from transferapp.serving import prediction_log, predictions
from transferapp.training import selectors as training_selectors
from transferapp.web import actions, batches, uploads


@login_required
def predict(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.VIEWER, pk=pk)
    model_run = training_selectors.model_run(project=project)  # the published version, else the latest
    runs = _current_first(list(training_selectors.predictable_runs(project=project)), model_run)
    if request.method == "POST":
        return _predict_post(request, project, runs)
    context = {"project": project, "runs": runs, "model_run": model_run, **batches.batch_panel(request, project)}
    return render(request, "transferapp/predict.html", context)


def _current_first(runs: list, current) -> list:
    """The project's model (published, else latest) first: the predict page's default choice."""
    return sorted(runs, key=lambda run: run != current) if current else runs


def _predict_post(request, project, runs):
    run = next((r for r in runs if str(r.pk) == request.POST.get("run")), runs[0] if runs else None)
    if run is None:
        return actions.refuse(request, "Train a model first: this project has no finished run yet.", request.path)
    refusal = throttle.prediction_refusal(request.user, len(request.FILES.getlist("files")))
    if refusal:
        return actions.refuse(request, refusal, request.path, status=429)
    results = [{"name": name, "error": reason} for name, reason in uploads.refused_files(request)]
    for upload in request.FILES.getlist("files"):
        try:
            result = predictions.predict_uploaded(run, upload, decoded=lambda pixels: throttle.predictions_counted(
                request.user, throttle.extra_weight([pixels])), source=prediction_log.page())
        except predictions.PredictionError as exc:
            results.append({"name": upload.name, "error": str(exc)})
            continue
        # A "Don't know" answered no class: its top class leads nothing (the page draws none until one is picked).
        first = [] if result["unfamiliar"] else [result["top"]]
        results.append({**result, "heatmaps": serving_heatmaps.choices(
            result["classes"], first, lambda i, d=result["digest"]: reverse("run_heatmap", args=[run.pk, d, i]))})
    if not results:
        return actions.refuse(request, "Choose one or more images first.", request.path)
    context = {"project": project, "runs": runs, "run": run, "results": results,
               "model_run": training_selectors.model_run(project=project), **batches.batch_panel(request, project)}
    if actions.is_script_request(request):
        return render(request, "transferapp/predict.html#results", context)
    return render(request, "transferapp/predict.html", context)
