"""Progress of a training, an import or a batch written onto its row (throttled; this try's only)."""

import logging
import time
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from transferapp.accounts import throttle
from transferapp.jobs import tries
from transferapp.models import BatchPrediction, ImportJob, ImportReportRow, TrainingRun
from transferapp.storage import blobs
from transferapp.training import versions as training_versions
from transferapp.webhooks import events as webhook_events

logger = logging.getLogger(__name__)

# Progress rows are written at most this often, so a fast loop does not hammer the database.
PROGRESS_WRITE_INTERVAL_S = 1.0

CANCEL_CHECK_INTERVAL_S = 1.0


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


def seconds_past_time_limit() -> float:
    """How long ago this job's time limit passed (0 when it has not, or outside a job)."""
    job = get_current_job()
    if job is None or not job.timeout or job.timeout < 0 or job.started_at is None:
        return 0.0
    ran_s = (datetime.now(UTC).replace(tzinfo=None) - job.started_at.replace(tzinfo=None)).total_seconds()
    return max(0.0, ran_s - job.timeout)


class TimeLimit:
    """rq's alarm fires once; a library's catch-all (an exporter, a decoder) can swallow it and the
    run would then go on for ever. The engine's own callbacks check the clock as a second line."""

    def __init__(self):
        job = get_current_job()
        self.timeout_s = job.timeout if job is not None and job.timeout and job.timeout > 0 else None
        self.checks = Every(CANCEL_CHECK_INTERVAL_S)

    def enforce(self, force: bool = False) -> None:
        if self.timeout_s and self.checks.due(force) and seconds_past_time_limit() > 0:
            raise JobTimeoutException(f"Task exceeded maximum timeout value ({self.timeout_s} seconds)")


class ProgressReporter:
    """Turns the engine's callbacks into throttled row updates and cancellation checks."""

    def __init__(self, run: TrainingRun):
        self.run, self.rows = run, tries.this_try(run)
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)
        self.cancel_checks = Every(CANCEL_CHECK_INTERVAL_S)
        self.cancelled = False
        self.time_limit = TimeLimit()

    def report(self, progress: dict) -> None:
        self.time_limit.enforce()
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
            "seconds_left": progress.get("seconds_left"),
        }
        if epoch_ended:
            fields["history"] = progress["history"]
        if progress.get("first_model_ready") and self.rows.filter(status=TrainingRun.Status.RUNNING).exists():
            # Stage 1's model is on disk (and in the bucket): the predict page may use it while stage 2 runs.
            blobs.artifact_publish(self.run)
            fields["metrics"] = {"first_model_ready": True, "first_model_accuracy": progress["history"][-1]["val_accuracy"]}
            _offer_this_tries_model(self.run, **fields)
            return
        self.rows.update(**fields)

    def should_stop(self) -> bool:
        """Stop when cancelled, and also when the run was deleted or is no longer ours to run."""
        self.time_limit.enforce()
        if not self.cancelled and self.cancel_checks.due():
            still_ours = self.rows.filter(status=TrainingRun.Status.RUNNING, cancel_requested=False)
            self.cancelled = not still_ours.exists()
        return self.cancelled


def finish(run: TrainingRun, status: str, *, metrics=None, error: str = "", message: str = "") -> None:
    """Record the outcome, unless the run was deleted; a finished model also replaces a
    "failed" that the app wrote when it lost patience with a slow worker."""
    fields = {"status": status, "finished_at": timezone.now(), "heartbeat_at": timezone.now(), "error": error}
    if metrics is not None:
        fields.update(metrics=metrics, history=metrics.get("history", []), progress=1.0)
    if message:
        fields["message"] = message
    allowed = [TrainingRun.Status.RUNNING] + ([TrainingRun.Status.FAILED] if status == TrainingRun.Status.SUCCEEDED else [])
    if status == TrainingRun.Status.SUCCEEDED:
        recorded = _offer_this_tries_model(run, among=allowed, **fields)
    else:
        recorded = tries.this_try(run).filter(status__in=allowed).update(**fields)
    run.status = TrainingRun.objects.filter(pk=run.pk).values_list("status", flat=True).first() or "deleted"
    if run.status == TrainingRun.Status.SUCCEEDED:
        run.version = training_versions.run_assign_version(run_id=run.pk)
    if recorded and run.status == status:
        webhook_events.announce_run_end(run.pk)  # training.finished or training.failed


def _offer_this_tries_model(run: TrainingRun, among=(TrainingRun.Status.RUNNING,), **fields) -> int:
    """Point the run at this try's model folder (with `fields`), while the row is at this try; an
    earlier try's folder, offered until now (its quick model), goes. Returns the rows updated (0 or 1)."""
    rows = tries.this_try(run).filter(status__in=among)
    earlier = rows.values_list("artifact_dir", flat=True).first()
    updated = rows.update(artifact_dir=blobs.artifact_record(run), **fields)
    if updated and earlier and earlier != blobs.artifact_record(run):
        try:  # best effort: a bucket that hiccups must not undo a recorded outcome (the version comes next)
            blobs.remove_stored(earlier)
        except Exception:
            logger.exception("Run %s: could not remove its earlier try's model folder %s", run.pk, earlier)
    return updated


class ImportStopped(Exception):
    """The import's row is gone (deleted with its project): storing more files would orphan them."""


class ImportReporter:
    """Appends the new lines of the per-file report and the counts, at most once a second; checks
    before every next file that the import still exists (and is still at this try)."""

    def __init__(self, job: ImportJob):
        self.import_id, self.rows = job.pk, tries.this_try(job)
        self.counts = {"accepted": job.accepted, "skipped": job.skipped, "refused": job.refused, "junk": job.junk,
                       "inbox": job.inbox, "processed": job.processed, "splits": dict(job.split_counts)}  # an earlier try's
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)
        self.rows_written = 0
        self.last = None  # the summary of every file handled so far, reported or not yet

    def report(self, summary: dict, force: bool = False) -> None:
        self.last = summary
        if not self.rows.exists():
            raise ImportStopped()
        if not self.writes.due(force=force):
            return
        new_rows = summary["report"][self.rows_written:]
        # The report's rows and the counts a later try goes on from, together, and only while this
        # try is current (the update takes the row's lock: a reaper queueing the next try waits).
        with transaction.atomic():
            if not self.rows.update(processed=summary["processed"], accepted=summary["accepted"],
                                    skipped=summary["skipped"], refused=summary["refused"], junk=summary["junk"],
                                    inbox=summary["inbox"], missing_rows=summary["missing_rows"],
                                    labels_file=summary["labels_file"][:500], split_counts=summary["splits"],
                                    heartbeat_at=timezone.now()):
                raise ImportStopped()
            ImportReportRow.objects.bulk_create(
                [ImportReportRow(job_id=self.import_id, name=row["name"][:500], label=(row["label"] or "")[:255],
                                 ok=row["ok"], skipped=row["status"] == "skipped", reason=row["reason"],
                                 inbox=bool(row.get("inbox")), missing=row["status"] == "missing")
                 for row in new_rows],
                batch_size=500,
            )
        self.rows_written += len(new_rows)

    def report_last(self) -> None:
        """On the way out of a failed import: the counts and report lines of every file handled,
        also those of the last second (a failed import's page says what it stored)."""
        if self.last is None:
            return
        try:
            self.report(self.last, force=True)
        except ImportStopped:
            pass  # deleted meanwhile, or a later try took over: nothing of this try to record


def finish_import(job: ImportJob, status: str, error: str = "") -> None:
    """Record the outcome; an import that completes also replaces a "failed" written when the
    app lost patience with a slow worker (as a finished training does)."""
    allowed = [ImportJob.Status.RUNNING] + ([ImportJob.Status.FAILED] if status == ImportJob.Status.DONE else [])
    tries.this_try(job).filter(status__in=allowed).update(status=status, error=error, message="", finished_at=timezone.now())


class BatchStopped(Exception):
    """The batch's row is gone (its project was deleted), or no longer at this try."""


class BatchReporter:
    """After each chunk: records progress, counts the images against the owner's prediction
    allowance (the same one the predict page uses) and, when it is used up, waits for the next
    minute's instead of refusing the rest of the batch."""

    WAIT_STEP_S = 1.0

    def __init__(self, batch: BatchPrediction, total: int):
        self.rows, self.total = tries.this_try(batch), total
        self.owner = str(batch.project.owner_id)
        self.allowance = throttle.predictions_per_user()
        self.counted_before, self.seen = batch.counted, 0  # by earlier tries; images of this try so far

    def report(self, done: int, refused: int, images: int) -> None:
        self.seen += images
        # An earlier try (its worker died) predicted the same images first: count only those past it.
        uncounted = self.seen - max(self.counted_before, self.seen - images)
        if not self.rows.update(done=done, refused=refused, heartbeat_at=timezone.now(),
                                counted=max(self.counted_before, self.seen)):
            raise BatchStopped()
        if uncounted > 0:
            self.allowance.hit(self.owner, uncounted)
        if done < self.total and self.allowance.exceeded(self.owner):
            self.rows.update(message=f"Paused: {self.allowance.limit} predictions a minute are allowed; "
                                     "it goes on within a minute.")
            while self.allowance.exceeded(self.owner):
                time.sleep(self.WAIT_STEP_S)
            self.rows.update(message="")


def finish_batch(batch: BatchPrediction, status: str, *, error: str = "", csv_path: str = "") -> None:
    """Record the outcome; a batch that completes also replaces a "failed" written when the app lost
    patience with a slow worker (as a finished import does)."""
    allowed = [BatchPrediction.Status.RUNNING] + ([BatchPrediction.Status.FAILED] if status == BatchPrediction.Status.DONE else [])
    tries.this_try(batch).filter(status__in=allowed).update(
        status=status, error=error, csv_path=csv_path, message="", finished_at=timezone.now())
