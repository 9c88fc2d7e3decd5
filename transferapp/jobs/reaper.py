"""Settles runs, imports and batch predictions whose worker died or whose job vanished, purges
deleted images whose undo window has passed, batches older than BATCH_KEPT_DAYS and the
prediction log past its retention, and hands due webhook retries back to the queue, without
waiting for a page view.

Every worker runs one Reaper thread (see workers.py). A sweep only makes conditional updates
(queued -> failed; running -> queued as the next try, or -> failed), each on the row as it saw it,
so several workers sweeping at once agree; a job queued twice is claimed once. In bucket mode it
also clears this machine's scratch folder of deleted data and of what lost jobs left there.
"""
import logging
import threading
import time

import django_rq
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from redis.exceptions import RedisError

from transferapp.jobs import checks, sweeps
from transferapp.library import trash
from transferapp.models import BatchPrediction, ImportJob, TrainingRun
from transferapp.serving import batch_runs, prediction_log
from transferapp.webhooks import delivery as webhook_delivery

logger = logging.getLogger(__name__)

UNFINISHED = ("queued", "running")


def sweep() -> None:
    for run in TrainingRun.objects.filter(status__in=UNFINISHED):
        checks.run_check(run=run)
    for job in ImportJob.objects.filter(status__in=UNFINISHED):
        checks.import_check(job=job)
    for batch in BatchPrediction.objects.filter(status__in=UNFINISHED):
        checks.batch_check(batch=batch)
    batch_runs.batches_purge_expired()  # their CSVs and thumbnails, BATCH_KEPT_DAYS after they ended
    # Deleted images leave the disk (files and cached features) once their undo window has passed,
    # even in a project nobody touches again.
    for project_id in trash.projects_with_expired_trash():
        trash.deleted_images_purge(project_id=project_id)
    # Webhook retries whose backoff has passed (the workers run no rq scheduler), and deliveries whose job was lost.
    webhook_delivery.retry_due()
    _forget_deleted_in_scratch()
    drift_sweep_enqueue()
    _purge_prediction_log()


DRIFT_SWEEP_S = 3600  # drift.detected is sent at most once a day a project; an hour's delay is fine
DRIFT_SWEEP_TASK = "transferapp.jobs.tasks.drift_sweep"


def drift_sweep_enqueue() -> bool:
    """Hand the drift check to a worker once every DRIFT_SWEEP_S, whichever worker's reaper comes
    first (cache.add is atomic in Redis): it loads model features and runs a test per project, work
    that must not hold this thread (a sweep in progress delays the worker's next job). True when queued."""
    try:
        if not cache.add("drift-sweep-queued", 1, timeout=DRIFT_SWEEP_S):
            return False
        django_rq.get_queue("intake").enqueue(DRIFT_SWEEP_TASK, job_timeout=600)
    except RedisError:
        logger.exception("Could not queue the drift sweep")
        return False
    return True


PREDICTION_SWEEP_S = 600.0  # listing each project's kept images (a bucket listing): not every sweep
_predictions_swept_at = float("-inf")


def _purge_prediction_log() -> None:
    """Logged predictions' images after PREDICTION_IMAGES_KEPT_DAYS (or past the size cap), their
    rows after PREDICTION_LOG_KEPT_DAYS, within PREDICTION_SWEEP_S."""
    global _predictions_swept_at
    if time.monotonic() - _predictions_swept_at >= PREDICTION_SWEEP_S:
        _predictions_swept_at = time.monotonic()
        prediction_log.predictions_purge_expired()


SCRATCH_SWEEP_S = 600.0  # walking the scratch cache and the feature cache: not every sweep
_scratch_swept_at = float("-inf")


def _forget_deleted_in_scratch() -> None:
    """Bucket mode: what this machine fetched of deleted data, and what lost jobs left, goes within
    SCRATCH_SWEEP_S. Local mode: so do model folders that no run refers to."""
    global _scratch_swept_at
    if time.monotonic() - _scratch_swept_at >= SCRATCH_SWEEP_S:
        _scratch_swept_at = time.monotonic()
        sweeps.scratch_sweep()
        sweeps.model_folders_sweep()


class Reaper(threading.Thread):
    """Sweeps at once, then every `interval_s`, in the worker process (its own database connection,
    open only during a sweep).

    The worker forks a work horse beside this thread: an SQLite connection must never cross fork()
    (the child's copy, closed, drops the parent's POSIX locks and SQLite then deletes a WAL still in
    use). So a sweep holds `sweeping` and closes its connection before releasing it, and the worker
    forks holding `sweeping` too (workers.ReapingWorker.fork_work_horse)."""

    def __init__(self, interval_s: float | None = None):
        super().__init__(daemon=True, name="transferapp-reaper")
        self.interval_s = settings.REAPER_INTERVAL_S if interval_s is None else interval_s
        self.stopped = threading.Event()
        self.first_sweep_done = threading.Event()
        self.sweeping = threading.Lock()

    def run(self) -> None:
        try:
            while True:
                self._sweep_safely()
                self.first_sweep_done.set()
                if self.stopped.wait(self.interval_s):
                    return
        finally:
            connection.close()

    def _sweep_safely(self) -> None:
        with self.sweeping:
            try:
                sweep()
            except Exception:  # a sweep that fails (database briefly down) is retried at the next tick
                logger.exception("The reaper's sweep failed")
            finally:
                connection.close()  # nothing open between sweeps, when the worker may fork

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
