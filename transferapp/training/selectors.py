"""Reads of runs and model versions (access-checked), and which workers are online."""

from datetime import timedelta

import django_rq
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rq import Worker

from transferapp.accounts.selectors import checked_get
from transferapp.models import Project, TrainingRun


def run_get_for_user(*, user, pk, need: str) -> TrainingRun:
    return checked_get(TrainingRun.objects.select_related("project"), user=user, need=need, pk=pk)


def runs_for_project(*, project: Project):
    return project.runs.all()


def predictable_runs(*, project: Project):
    """Finished models, and running, cancelled or failed ones whose quick first model is on disk
    (it was complete before the run stopped: a worker that died later does not spoil it), queued
    ones too (a run queued again after its worker died offers its earlier try's)."""
    unfinished = [TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING, TrainingRun.Status.CANCELLED,
                  TrainingRun.Status.FAILED]
    return project.runs.filter(
        Q(status=TrainingRun.Status.SUCCEEDED) | Q(status__in=unfinished, metrics__first_model_ready=True)
    )


def latest_finished_run(*, project: Project) -> TrainingRun | None:
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED).first()


def workers_online() -> bool:
    """Whether any training worker is listening, so a queued run's page can say why it waits."""
    try:
        return bool(Worker.all(queue=django_rq.get_queue("default"))) or gpu_workers_online()
    except Exception:  # Redis down: the page still renders; the run stays queued in the database
        return False


def gpu_workers_online() -> bool:
    """Whether a GPU worker (workers.GpuWorker) has said it is alive within GPU_WORKER_TTL_S + 60 s.
    Its registration would also expire then; the heartbeat check does not wait for Redis to notice."""
    return bool(_live_gpu_workers())


def gpu_worker_free() -> bool:
    """Whether a live GPU worker is idle: a training sent to `gpu` then starts now, instead of
    waiting behind one that may run for hours while the CPU workers sit idle."""
    return any(w.get_state() == "idle" for w in _live_gpu_workers())


def _live_gpu_workers() -> list:
    horizon = timezone.now() - timedelta(seconds=settings.GPU_WORKER_TTL_S + 60)
    workers = Worker.all(queue=django_rq.get_queue("gpu"))
    return [w for w in workers if w.last_heartbeat is not None and w.last_heartbeat > horizon]


# --- model versions and API keys ----------------------------------------------------------------

def versions_for_project(*, project: Project):
    """Succeeded runs, newest version first."""
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED, version__isnull=False).order_by("-version")


def published_run(*, project: Project) -> TrainingRun | None:
    """The version the owner published, if it is still a usable version; None when none is."""
    if not project.published_run_id:
        return None
    return versions_for_project(project=project).filter(pk=project.published_run_id).first()


def model_run(*, project: Project, version: int | None = None) -> TrainingRun | None:
    """The run that answers for the project: version `version`, else the published one, else the latest."""
    versions = versions_for_project(project=project)
    if version is not None:
        return versions.filter(version=version).first()
    return published_run(project=project) or versions.first()


def compared_versions(*, project: Project, before, after) -> tuple[TrainingRun | None, TrainingRun | None]:
    """The two versions the compare page shows: the ones named (version numbers, as typed in the
    URL), else the latest against the published one (what a new version would replace), or, with
    none published or the latest published, against the version before it."""
    versions = {run.version: run for run in versions_for_project(project=project)}
    # isdigit() alone admits "²" and 5,000-digit strings, which int() refuses: HTTP 500.
    named = [versions.get(int(v)) if str(v).isascii() and str(v).isdigit() and len(str(v)) < 10 else None
             for v in (before, after)]
    if all(named):
        return named[0], named[1]
    if not versions:
        return None, None
    latest = versions[max(versions)]
    published = project.published_run_id and next((r for r in versions.values() if r.pk == project.published_run_id), None)
    if published and published != latest:
        return published, latest
    older = [v for v in versions if v < latest.version]
    return (versions[max(older)], latest) if older else (latest, None)
