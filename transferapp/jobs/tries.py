"""One try of a job: claimed (queued -> running) once, alive while it beats, silent once replaced."""

import logging
import threading

from django import db
from django.db import close_old_connections, connection
from django.utils import timezone

from transferapp.models import BatchPrediction, ImportJob, TrainingRun

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 20.0


class Heartbeat(threading.Thread):
    """Tells the app this worker is alive, also during long steps that report no progress
    (hashing thousands of files, the stage-1 search, one huge file of an import): a silent
    training run or import is presumed dead."""

    def __init__(self, row: TrainingRun | ImportJob | BatchPrediction, interval_s: float = HEARTBEAT_INTERVAL_S):
        super().__init__(daemon=True)
        self.rows = this_try(row).filter(status=row.Status.RUNNING)
        self.interval_s, self.stopped = interval_s, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval_s):
                try:
                    self.beat()
                except db.Error:  # the database restarted: beat again next time, on a new connection
                    logger.warning("Heartbeat failed; retrying", exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own database connection

    def beat(self) -> None:
        now = timezone.now()
        if self.rows.model is not TrainingRun:
            self.rows.update(heartbeat_at=now)
            return
        # A run's priced time left is "as of heartbeat_at": moving one without the other made the
        # page's countdown jump back up every beat. Compare-and-set, so a fresher estimate the
        # progress reporter wrote meanwhile is never overwritten (its write was a beat too).
        row = self.rows.values("heartbeat_at", "seconds_left").first()
        if row is None:
            return
        left = row["seconds_left"]
        if left is not None and row["heartbeat_at"] is not None:
            left = max(left - (now - row["heartbeat_at"]).total_seconds(), 0.0)
        self.rows.filter(heartbeat_at=row["heartbeat_at"]).update(heartbeat_at=now, seconds_left=left)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def claim(row: TrainingRun | ImportJob | BatchPrediction, **fields) -> bool:
    """Queued -> running, atomically, so a cancelled, expired or duplicate job does nothing. The
    row's `attempt` is then this worker's try: see this_try."""
    now = timezone.now()
    claimed = type(row).objects.filter(pk=row.pk, status=row.Status.QUEUED).update(
        status=row.Status.RUNNING, started_at=now, heartbeat_at=now, **fields
    )
    row.refresh_from_db()
    return bool(claimed)


def this_try(row: TrainingRun | ImportJob | BatchPrediction):
    """The row while it is still at this worker's try. A try the app gave up on (silent too long,
    then queued again: jobs.rules.rerun_if_silent) may still be alive; it writes nothing more."""
    return type(row).objects.filter(pk=row.pk, attempt=row.attempt)
