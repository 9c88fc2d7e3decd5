"""Training runs: start (queued on the right workers), cancel, delete, the trust settings of a run."""

import math
from dataclasses import asdict

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from transferapp.accounts import quotas
from transferapp.audit import trail
from transferapp.engine.config import TrainConfig
from transferapp.engine.zoo import get_base
from transferapp.library import errors, readiness
from transferapp.library import selectors as library_selectors
from transferapp.models import Project, TrainingRun
from transferapp.storage import blobs
from transferapp.training import selectors as training_selectors


def run_set_alpha(*, run: TrainingRun, alpha: float) -> None:
    """The risk level of the run's prediction sets; refused below what its calibration supports."""
    floor = (run.metrics.get("trust") or {}).get("min_alpha", 0.0)
    if not math.isfinite(alpha) or alpha <= 0 or alpha < floor or alpha > 0.5:
        raise errors.ServiceError(f"Choose a risk level between {max(floor, 0.001):g} and 0.5: with "
                           f"{(run.metrics.get('trust') or {}).get('n_calibration', 0)} calibration images a "
                           "smaller one cannot be promised.")
    TrainingRun.objects.filter(pk=run.pk).update(alpha=alpha)


def run_set_threshold(*, run: TrainingRun, positive_class: str, threshold: float | None) -> None:
    """Two-class runs: which class is positive and the score from which predictions call it."""
    if len(run.classes) != 2 or positive_class not in run.classes:
        raise errors.ServiceError("A decision threshold needs a two-class model and one of its classes.")
    if threshold is not None and not 0 < threshold < 1:
        raise errors.ServiceError("The threshold must be between 0 and 1.")
    TrainingRun.objects.filter(pk=run.pk).update(positive_class=positive_class, decision_threshold=threshold)


def training_start(*, project: Project, base_model: str, preset: str, config: dict) -> TrainingRun:
    problems = readiness.training_problems(project=project)
    if problems:
        raise errors.ServiceError(" ".join(problems))
    errors.refuse_if(quotas.run_refusal(owner=project.owner_id))
    try:
        get_base(base_model)
        no_mirroring = library_selectors.project_no_mirroring(project=project)
        class_order = library_selectors.project_class_order(project=project) if project.ordered_classes else []
        train_config = TrainConfig.from_dict({**config, "base": base_model, "preset": preset, "no_mirroring": no_mirroring,
                                              "class_order": class_order})
    except ValueError as exc:
        raise errors.ServiceError(str(exc)) from None
    with transaction.atomic():
        quotas.lock_owner(project.owner_id)
        errors.refuse_if(quotas.run_refusal(owner=project.owner_id))  # again: one may have started meanwhile
        run = TrainingRun.objects.create(
            project=project,
            base_model=base_model,
            preset=preset,
            config=asdict(train_config),
            classes=[label.name for label in project.labels.all()],
            n_images=project.images.count(),
        )
        run.job_id = f"run-{run.pk}"
        run.save(update_fields=["job_id"])
        trail.record(action="run.started", project=project,
                     detail={"run": run.pk, "base": base_model, "preset": preset, "images": run.n_images})
        errors.on_commit_or_fail(lambda: enqueue_training(run), on_failure=lambda: run_not_queued(run))
    return run


def enqueue_training(run: TrainingRun) -> None:
    # rq kills a job at its timeout: leave room for the user's time budget plus features and stage 1.
    budget = TrainConfig.from_dict(run.config).time_budget_s
    timeout = max(settings.RQ_QUEUES["default"]["DEFAULT_TIMEOUT"], int(budget) + 3600)
    queue = django_rq.get_queue(_training_queue_name(), commit_mode="auto")
    queue.enqueue("transferapp.jobs.tasks.run_training", run.pk, job_id=run.job_id, job_timeout=timeout)


def _training_queue_name() -> str:
    """`gpu` while a live GPU worker is idle, else `default`, which the CPU workers serve and the GPU
    workers too once their own queue is empty (manage.py gpuworker listens on both)."""
    return "gpu" if training_selectors.gpu_worker_free() else "default"


def run_not_queued(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, error=errors.QUEUE_DOWN, finished_at=timezone.now())


def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Queued runs stop at once; running ones stop at the worker's next check (a second or two)."""
    if run.is_finished:
        return run
    trail.record(action="run.cancelled", project=run.project, detail={"run": run.pk, "status": run.status})
    if run.status == TrainingRun.Status.QUEUED:
        updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now(), message="Cancelled before it started."
        )
        if updated:
            run.refresh_from_db()
            return run
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True, message="Cancelling…")
    run.refresh_from_db()
    return run


def run_delete(*, run: TrainingRun) -> None:
    artifact_dir = run.artifact_dir
    with transaction.atomic():
        if run.version is not None:
            trail.record(action="version.deleted", project=run.project, detail={"run": run.pk, "version": run.version})
        else:
            trail.record(action="run.deleted", project=run.project, detail={"run": run.pk, "status": run.status})
        run.delete()
    blobs.remove_stored(artifact_dir)
