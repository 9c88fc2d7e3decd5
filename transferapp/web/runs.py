"""Training pages: start, watch, results, cancel, retry, delete, download, trust settings."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.jobs import checks
from transferapp.library import errors
from transferapp.library import selectors as library_selectors
from transferapp.models import TrainingRun
from transferapp.reporting import live_accuracy, results
from transferapp.serving import exports
from transferapp.storage import blobs, zipstream
from transferapp.training import runs as training_runs
from transferapp.training import selectors as training_selectors
from transferapp.web import actions, forms


@login_required
@require_POST
def run_trust_settings(request, pk):
    """The run's risk level and, for two classes, the positive class and decision threshold."""
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    try:
        if "alpha" in request.POST:
            training_runs.run_set_alpha(run=run, alpha=float(request.POST["alpha"]))
        if "positive_class" in request.POST:
            raw = request.POST.get("threshold", "").strip()
            training_runs.run_set_threshold(run=run, positive_class=request.POST["positive_class"],
                                       threshold=float(raw) if raw else None)
    except ValueError:
        messages.error(request, "Enter a number such as 0.1.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Saved: predictions with this model use it from now on.")
    return redirect(run)


@login_required
@require_POST
def training_start(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    form = forms.TrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the training settings: " + form.errors.as_text())
        return redirect(project)
    data = form.cleaned_data
    run = actions.apply(
        request, training_runs.training_start,
        project=project, base_model=data["base_model"], preset=data["preset"], config=form.engine_config(),
    )
    return redirect(run or project)


@login_required
def run_detail(request, pk):
    run = checks.run_check(run=training_selectors.run_get_for_user(user=request.user, need=roles.VIEWER, pk=pk))
    if request.htmx and request.GET.get("live"):  # the 2-second poll: the live panel only
        response = render(request, "transferapp/run_detail.html#live", results._run_context(run))
        if run.is_finished:
            response["HX-Refresh"] = "true"  # the full page then shows the results
            response.status_code = 286  # htmx: stop polling
        return response
    context = results.results_context(run, cell=request.GET.get("cell", ""))
    context["live"] = live_accuracy.version_live(run) if run.status == TrainingRun.Status.SUCCEEDED else None
    return render(request, "transferapp/run_detail.html", context)


@login_required
@require_POST
def run_cancel(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    training_runs.run_cancel(run=run)
    return redirect(run)


@login_required
@require_POST
def run_retry(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    new_run = actions.apply(
        request, training_runs.training_start,
        project=run.project, base_model=run.base_model, preset=run.preset, config=run.config,
    )
    return redirect(new_run or run)


@login_required
@require_POST
def run_delete(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    if not run.is_finished:
        messages.error(request, "Cancel the run before deleting it.")
        return redirect(run)
    training_runs.run_delete(run=run)
    messages.success(request, "Run deleted.")
    return redirect(run.project)


@login_required
def run_download(request, pk):
    run = training_selectors.run_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    # In bucket mode this process's copy of the model folder: the zip is streamed from local files.
    artifact_dir = blobs.artifact_folder(run) if run.status == TrainingRun.Status.SUCCEEDED else None
    if not artifact_dir or not artifact_dir.is_dir():
        raise Http404("No model for this run")
    name = f"{slugify(run.project.name) or 'model'}-run-{run.pk}"
    exports.download_recorded(run=run, what="model files")
    files = [(path, f"{name}/{path.name}") for path in sorted(artifact_dir.iterdir())
             if path.is_file() and not path.name.startswith(".")]  # not the mirror's own bookkeeping
    # Written while it is sent: a large base's weights are never held in memory whole.
    response = StreamingHttpResponse(zipstream.zip_chunks(files), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=f"{name}.zip")
    return response
