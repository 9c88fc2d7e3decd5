"""django-rq jobs: thin wrappers that load rows by id, call the engine, record the outcome.

The TrainingRun row is the truth; RQ's own job state is only plumbing.
"""
import logging
import shutil
import threading
import time
from pathlib import Path

import torch
from django.conf import settings
from django.db import connection
from django.utils import timezone

from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample, stratified_split
from transferapp.engine.features import precompute
from transferapp.engine.train import TrainingCancelled, fit
from transferapp.engine.zoo import WeightsUnavailable
from transferapp import selectors
from transferapp.archive import ArchiveRejected, Limits, ZipSource
from transferapp.models import Image, ImportJob, TrainingRun
from transferapp.services import import_entries, project_purge_files

logger = logging.getLogger(__name__)

# Progress rows are written at most this often, so a fast loop does not hammer the database.
PROGRESS_WRITE_INTERVAL_S = 1.0
CANCEL_CHECK_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 20.0


def run_training(run_id: int) -> str:
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    if not _claim(run):
        return f"run {run_id} was {run.status} before it started"
    _configure_threads()
    heartbeat = Heartbeat(run.pk)
    heartbeat.start()
    try:
        metrics = _fit_run(run)
    except TrainingCancelled:
        _finish(run, TrainingRun.Status.CANCELLED, message="Cancelled.")
    except WeightsUnavailable as exc:
        _finish(run, TrainingRun.Status.FAILED, error=str(exc))
    except Exception as exc:  # the worker must record any failure, then carry on with the next job
        logger.exception("Training run %s failed", run_id)
        _finish(run, TrainingRun.Status.FAILED, error=_readable_error(exc))
    else:
        _finish(run, TrainingRun.Status.SUCCEEDED, metrics=metrics, message="Done.")
    finally:
        heartbeat.stop()
    if not TrainingRun.objects.filter(pk=run_id).exists():  # deleted meanwhile: leave no files behind
        shutil.rmtree(_artifact_dir(run), ignore_errors=True)
    project_purge_files(project_id=run.project_id, older_than=run.started_at)  # images deleted while it read them
    return run.status


class Heartbeat(threading.Thread):
    """Tells the app this worker is alive, also during long steps that report no progress
    (hashing thousands of files, the stage-1 search): a silent run is presumed dead."""

    def __init__(self, run_id: int, interval_s: float = HEARTBEAT_INTERVAL_S):
        super().__init__(daemon=True)
        self.run_id, self.interval_s, self.stopped = run_id, interval_s, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval_s):
                TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own database connection

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _artifact_dir(run: TrainingRun) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / f"project-{run.project_id}" / f"run-{run.pk}"


def _claim(run: TrainingRun) -> bool:
    """Queued -> running, atomically, so a cancelled or duplicate job does nothing."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, message="Starting…"
    )
    run.refresh_from_db()
    return bool(claimed)


def _configure_threads() -> None:
    if settings.TORCH_THREADS > 0:
        torch.set_num_threads(settings.TORCH_THREADS)


def _fit_run(run: TrainingRun) -> dict:
    samples, classes, given_val = _snapshot_samples(run)
    samples, test = _hold_out_test(run, samples)
    config = TrainConfig.from_dict(run.config)
    groups = selectors.near_duplicate_groups(project=run.project)
    train, val = _split(samples, given_val, groups, config)
    out_dir = _artifact_dir(run)
    TrainingRun.objects.filter(pk=run.pk).update(classes=classes, n_images=len(samples), artifact_dir=str(out_dir))
    reporter = ProgressReporter(run.pk)
    return fit(
        train,
        val,
        classes,
        config,
        out_dir,
        test=test,
        cache_dir=Path(settings.FEATURE_CACHE_DIR),
        on_progress=reporter.report,
        should_stop=reporter.should_stop,
    )


def _snapshot_samples(run: TrainingRun) -> tuple[list[Sample], list[str], set[str]]:
    """The images as they are when training starts; later uploads belong to the next run."""
    labels = list(run.project.labels.order_by("name"))
    classes = [label.name for label in labels]
    index = {label.pk: i for i, label in enumerate(labels)}
    images = list(run.project.images.order_by("pk"))
    samples = [Sample(path=image.file.path, label=index[image.label_id], key=str(image.pk)) for image in images]
    given_val = {str(image.pk) for image in images if image.split == "val"}
    return samples, classes, given_val


def _hold_out_test(run: TrainingRun, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Images in the test split (imported test/ folders, or set aside on a class page) go to the
    engine apart: it only scores them with the final model."""
    test_keys = {str(pk) for pk in selectors.test_image_pks(project=run.project)}
    return [s for s in samples if s.key not in test_keys], [s for s in samples if s.key in test_keys]


def _split(samples, given_val: set[str], groups: list[list[int]], config: TrainConfig):
    """An imported train/val split is honoured when every class has images on both sides; otherwise
    the run makes its own stratified split (fixed by the seed) that keeps each group of
    near-duplicates on one side, so that validation never sees a copy of a training image."""
    val = [s for s in samples if s.key in given_val]
    train = [s for s in samples if s.key not in given_val]
    every_class = {s.label for s in samples}
    if val and {s.label for s in val} == every_class and {s.label for s in train} == every_class:
        return train, val
    return grouped_split(samples, groups, config.val_fraction, config.seed)


def grouped_split(samples: list[Sample], groups: list[list[int]], val_fraction: float, seed: int):
    leader = {str(member): str(group[0]) for group in groups for member in group}
    representatives = [s for s in samples if leader.get(s.key, s.key) == s.key]
    _, val_representatives = stratified_split(representatives, val_fraction, seed)
    val_leaders = {s.key for s in val_representatives}
    train = [s for s in samples if leader.get(s.key, s.key) not in val_leaders]
    val = [s for s in samples if leader.get(s.key, s.key) in val_leaders]
    return train, val


class Every:
    """True at most once per interval (or when forced): keeps fast loops off the database."""

    def __init__(self, interval_s: float):
        self.interval_s, self.last = interval_s, float("-inf")

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


class ProgressReporter:
    """Turns the engine's callbacks into throttled row updates and cancellation checks."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)
        self.cancel_checks = Every(CANCEL_CHECK_INTERVAL_S)
        self.cancelled = False

    def report(self, progress: dict) -> None:
        epoch_ended = "history" in progress
        if not self.writes.due(force=epoch_ended):
            return
        fields = {
            "heartbeat_at": timezone.now(),
            "progress": float(progress.get("fraction", 0.0)),
            "stage": progress.get("stage", ""),
            "epoch": int(progress.get("epoch") or 0),
            "total_epochs": int(progress.get("total_epochs") or 0),
            "message": str(progress.get("message", ""))[:255],
        }
        if epoch_ended:
            fields["history"] = progress["history"]
        if progress.get("first_model_ready"):
            # Stage 1's model is on disk: the predict page may use it while stage 2 runs.
            fields["metrics"] = {"first_model_ready": True, "first_model_accuracy": progress["history"][-1]["val_accuracy"]}
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)

    def should_stop(self) -> bool:
        """Stop when cancelled, and also when the run was deleted or is no longer ours to run."""
        if not self.cancelled and self.cancel_checks.due():
            still_ours = TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING, cancel_requested=False)
            self.cancelled = not still_ours.exists()
        return self.cancelled


def _finish(run: TrainingRun, status: str, *, metrics=None, error: str = "", message: str = "") -> None:
    """Record the outcome, unless the run was deleted; a finished model also replaces a
    "failed" that the app wrote when it lost patience with a slow worker."""
    fields = {"status": status, "finished_at": timezone.now(), "heartbeat_at": timezone.now(), "error": error}
    if metrics is not None:
        fields.update(metrics=metrics, history=metrics.get("history", []), progress=1.0)
    if message:
        fields["message"] = message
    allowed = [TrainingRun.Status.RUNNING] + ([TrainingRun.Status.FAILED] if status == TrainingRun.Status.SUCCEEDED else [])
    TrainingRun.objects.filter(pk=run.pk, status__in=allowed).update(**fields)
    run.status = TrainingRun.objects.filter(pk=run.pk).values_list("status", flat=True).first() or "deleted"


def _readable_error(exc: Exception) -> str:
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "The training ran out of memory. Try a smaller base model or a smaller batch size."
    if isinstance(exc, OSError) and exc.errno == 28:
        return "The server's disk is full. Free some space, then start the training again."
    return f"Training failed: {type(exc).__name__}: {exc}"


def precompute_features(project_id: int, base_model: str) -> int:
    """Embed a project's images in the background so that Train finds them ready."""
    images = Image.objects.filter(project_id=project_id).order_by("pk")
    paths = [image.file.path for image in images]
    if not paths:
        return 0
    _configure_threads()
    try:
        return precompute(paths, base_model, Path(settings.FEATURE_CACHE_DIR), TrainConfig(base=base_model).image_size)
    except WeightsUnavailable:
        return 0  # the training run reports this properly; a warm-up cache job has nothing to add


def run_import(import_id: int) -> str:
    job = ImportJob.objects.select_related("project").get(pk=import_id)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING)
    reporter = ImportReporter(job.pk)
    try:
        with ZipSource(Path(job.upload_path), Limits()) as source:
            ImportJob.objects.filter(pk=job.pk).update(total=len(source))
            summary = import_entries(project=job.project, entries=source, on_progress=reporter.report)
    except ArchiveRejected as exc:
        _finish_import(job.pk, ImportJob.Status.FAILED, error=str(exc))
    except Exception as exc:  # what was imported so far stays; the report says where it stopped
        logger.exception("Import %s failed", import_id)
        _finish_import(job.pk, ImportJob.Status.FAILED, error=f"The import stopped: {type(exc).__name__}: {exc}")
    else:
        reporter.report(summary, force=True)
        _finish_import(job.pk, ImportJob.Status.DONE)
    finally:
        Path(job.upload_path).unlink(missing_ok=True)
    return str(import_id)


class ImportReporter:
    def __init__(self, import_id: int):
        self.import_id = import_id
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)

    def report(self, summary: dict, force: bool = False) -> None:
        if not self.writes.due(force=force):
            return
        ImportJob.objects.filter(pk=self.import_id).update(
            processed=summary["accepted"] + summary["skipped"] + summary["junk"],
            accepted=summary["accepted"],
            skipped=summary["skipped"],
            junk=summary["junk"],
            report=summary["report"],
        )


def _finish_import(import_id: int, status: str, error: str = "") -> None:
    ImportJob.objects.filter(pk=import_id).update(status=status, error=error, finished_at=timezone.now())
