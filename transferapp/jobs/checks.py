"""A row reconciled with its worker and its queue (on a page view or by the reaper): runs,
imports and batches whose worker went silent or whose job vanished. The rules are in rules.py.
"""

import logging

import django_rq
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import JobStatus

from transferapp.jobs import rules
from transferapp.library import errors, imports
from transferapp.models import BatchPrediction, ImportJob, TrainingRun
from transferapp.serving import batch_runs
from transferapp.training import runs
from transferapp.training import selectors as training_selectors
from transferapp.webhooks import events as webhook_events

logger = logging.getLogger(__name__)


def run_check(*, run: TrainingRun) -> TrainingRun:
    """Reconcile the row (the truth) with the queue (plumbing): a page shows a run, or the reaper sweeps."""
    return run_requeue_if_lost(run=run_expire_if_stale(run=run))


def run_requeue_if_lost(*, run: TrainingRun) -> TrainingRun:
    """A queued run whose job vanished (Redis restarted without persistence) is queued again; one
    whose job failed in rq before the worker claimed it (it could not even load it) is failed."""
    if rules.requeue_if_lost(run, queue_name="default", enqueue=runs.enqueue_training,
                        fail=lambda reason: _run_fail_unclaimed(run, reason)):
        run.refresh_from_db()
    _run_leave_a_gone_gpu(run)
    return run


def _run_leave_a_gone_gpu(run: TrainingRun) -> None:
    """A run waiting in the `gpu` queue after the last GPU worker went away moves to the CPU workers.
    Should a GPU worker take the old job after all, the claim (queued -> running) lets one train."""
    if run.status != TrainingRun.Status.QUEUED:
        return
    try:
        job = rules.fetch_job("gpu", run.job_id)
        if job is None or job.origin != "gpu" or job.get_status() != JobStatus.QUEUED or training_selectors.gpu_workers_online():
            return
        django_rq.get_queue("gpu").remove(run.job_id)
        logger.warning("Run %s waited for a GPU worker that went away; moving it to the CPU workers", run.pk)
        runs.enqueue_training(run)
    except RedisError:
        pass


def _run_fail_unclaimed(run: TrainingRun, reason: str) -> None:
    if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
        error=f"The worker could not start this training ({reason}). Start the training again.",
    ):
        webhook_events.announce_run_end(run.pk)


def run_expire_if_stale(*, run: TrainingRun) -> TrainingRun:
    """A running run whose worker stopped reporting is run again (its next try) or, out of tries or
    asked to cancel, ended: nothing stays "running" forever. The earlier try's quick model stays
    offered until the next try has its own (jobs.progress.ProgressReporter)."""

    def end(rows, why: str) -> None:
        ending = ({"status": TrainingRun.Status.CANCELLED, "message": "Cancelled."} if run.cancel_requested
                  else {"status": TrainingRun.Status.FAILED, "error": f"{why} Start the training again."})
        if rows.update(finished_at=timezone.now(), **ending):
            webhook_events.announce_run_end(run.pk)

    rules.rerun_if_silent(run, enqueue=runs.enqueue_training, end=end, not_queued=lambda: runs.run_not_queued(run),
                     fresh=dict(progress=0.0, stage="", epoch=0, total_epochs=0, seconds_left=None, history=[],
                                worker_name="", device=""))
    return run


def import_check(*, job: ImportJob) -> ImportJob:
    """The import's row reconciled with its worker and its queue, as run_check does for runs. Run
    again, an import goes on after the last file its silent try reported (jobs.tasks.run_import)."""
    rules.rerun_if_silent(job, enqueue=imports.enqueue_import, not_queued=lambda: imports.import_fail(job, errors.QUEUE_DOWN, among=[ImportJob.Status.QUEUED]),
                     end=lambda rows, why: imports.import_fail(job, f"{why} The uploaded zip was deleted: upload it again to import "
                                                        "the rest (files already imported are recognised as duplicates).",
                                                        among=[ImportJob.Status.RUNNING], rows=rows))
    if rules.requeue_if_lost(job, queue_name="intake", enqueue=imports.enqueue_import,
                        fail=lambda reason: imports.import_fail(job, f"The worker could not start this import ({reason}). "
                                                         "Upload the zip again.", among=[ImportJob.Status.QUEUED])):
        job.refresh_from_db()
    return job


def batch_check(*, batch: BatchPrediction) -> BatchPrediction:
    """The batch's row reconciled with its worker and its queue, as import_check does for imports."""
    rules.rerun_if_silent(batch, enqueue=batch_runs.enqueue_batch, fresh=dict(done=0, refused=0),
                     not_queued=lambda: batch_runs.batch_fail(batch=batch, error=errors.QUEUE_DOWN, among=[BatchPrediction.Status.QUEUED]),
                     end=lambda rows, why: batch_runs.batch_fail(batch=batch, among=[BatchPrediction.Status.RUNNING], rows=rows,
                                                      error=f"{why} The uploaded files were deleted: send them again to "
                                                      "predict them."))
    if rules.requeue_if_lost(batch, queue_name="intake", enqueue=batch_runs.enqueue_batch,
                        fail=lambda reason: batch_runs.batch_fail(batch=batch, among=[BatchPrediction.Status.QUEUED],
                                                       error=f"The worker could not start this batch ({reason}). "
                                                       "Send the files again.")):
        batch.refresh_from_db()
    return batch
