"""The reaper's rules, one function each: silent, lost, killed in a living worker; run again or end."""

import logging

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from transferapp.library import errors
from transferapp.models import BatchPrediction, ImportJob, TrainingRun

logger = logging.getLogger(__name__)


def rerun_if_silent(row: TrainingRun | ImportJob | BatchPrediction, *, enqueue, end, not_queued, fresh=None) -> None:
    """A running row whose worker went silent is queued again as its next try, with a new job id
    and `fresh` field values, while JOB_ATTEMPTS allow: every job is safe to repeat (images and
    features are keyed by content hash, each try writes its own files). Out of tries, asked to
    cancel, or killed in a worker that lived on (rq saw its process die: most likely out of memory,
    and so again next time), it gets end(rows, why). Every change is conditional on the row being
    as seen, silent since the same heartbeat: of several reapers one acts, and a worker that beat
    meanwhile keeps its job. The row is refreshed."""
    silent_s = _silent_for(row)
    if silent_s is None:
        return
    as_seen = type(row).objects.filter(pk=row.pk, status=row.Status.RUNNING, attempt=row.attempt, heartbeat_at=row.heartbeat_at)
    killed, at_time_limit = _killed_in_a_living_worker(row)
    if at_time_limit:
        why = at_time_limit + " It was not run again."
    elif killed:
        why = (f"The worker's process was killed while it ran ({killed}); this usually means the machine ran out of "
               "memory, so it was not run again.")
    else:
        why = f"The worker stopped responding ({int(silent_s)} s without news); it may have been restarted or run out of memory."
    cancelling = getattr(row, "cancel_requested", False)
    if killed or at_time_limit or cancelling or row.attempt >= settings.JOB_ATTEMPTS:
        end(as_seen, why + (f" It was tried {row.attempt} times." if row.attempt > 1 else ""))
        row.refresh_from_db()
        return
    retry = row.attempt + 1
    if isinstance(row, TrainingRun):
        as_seen = as_seen.filter(cancel_requested=False)  # a cancel that landed meanwhile wins
    with transaction.atomic():
        requeued = as_seen.update(status=row.Status.QUEUED, attempt=retry, job_id=f"{row.job_id.partition('-try-')[0]}-try-{retry}",
                                  message=f"{why} Running it again (try {retry} of {settings.JOB_ATTEMPTS})."[:255], **(fresh or {}))
        row.refresh_from_db()
        if requeued:
            logger.warning("%s %s: its worker went silent; queued again as try %d", type(row).__name__, row.pk, retry)
            errors.on_commit_or_fail(lambda: enqueue(row), on_failure=not_queued)
    if not requeued and _silent_for(row) is not None:  # asked to cancel meanwhile: end it now
        rerun_if_silent(row, enqueue=enqueue, end=end, not_queued=not_queued, fresh=fresh)


def time_limit_text(timeout_s: int | None) -> str:
    limit = f"{timeout_s} s" if timeout_s else "its setting"
    return (f"The training stopped at the time limit (TRAINING_TIMEOUT_S = {limit}). Give it a shorter time "
            "budget or fewer epochs, or ask the administrator for a longer limit.")


def _killed_in_a_living_worker(row) -> tuple[str, str]:
    """(rq's record of a job whose process was SIGKILLed under a worker that lived on, "Work-horse
    terminated unexpectedly; waitpid returned 9 (signal 9)", or ""; the time-limit sentence when
    it was rq itself that killed it at the job's timeout, or "")."""
    try:
        job = fetch_job("default", row.job_id)
        failure = _job_failure(job) if job is not None and job.get_status() == JobStatus.FAILED else ""
    except RedisError:
        return "", ""
    if "terminated unexpectedly" not in failure:
        return "", ""
    # rq kills a horse that outlives its timeout by a minute (its record then says "waitpid returned
    # None", or a signal): the time limit, not the memory.
    if job.timeout and job.timeout > 0 and _job_ran_s(job) >= job.timeout:
        return "", time_limit_text(job.timeout)
    # SIGKILL (signal 9): the out-of-memory killer. A horse ended by SIGTERM went down with its
    # machine or service, which is what running it again is for.
    return (failure if "(signal 9)" in failure else ""), ""


def _job_ran_s(job) -> float:
    """Seconds from the job's start to its recorded end (rq notes the end in the failure's result)."""
    result = job.latest_result()
    ended = job.ended_at or getattr(result, "created_at", None)
    if not (job.started_at and ended):
        return 0.0
    return (ended.replace(tzinfo=None) - job.started_at.replace(tzinfo=None)).total_seconds()  # both UTC


def _silent_for(row: TrainingRun | ImportJob | BatchPrediction) -> float | None:
    """Seconds since a running row's worker last said it was alive, when that is too long."""
    if row.status != row.Status.RUNNING:
        return None
    silent_s = (timezone.now() - (row.heartbeat_at or row.created_at)).total_seconds()
    return silent_s if silent_s > settings.RUN_HEARTBEAT_TIMEOUT_S else None


def requeue_if_lost(row: TrainingRun | ImportJob | BatchPrediction, *, queue_name: str, enqueue, fail) -> bool:
    """Queue a queued row's vanished job again; fail the row if rq failed its job. True when failed."""
    if row.status != row.Status.QUEUED:
        return False
    try:
        job = fetch_job(queue_name, row.job_id)
        if job is None:
            logger.warning("%s %s had no job in Redis; queueing it again", type(row).__name__, row.pk)
            enqueue(row)
        elif job.get_status() in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            fail(_job_failure(job))
            return True
    except RedisError:
        pass  # the page says no worker is reachable; the row keeps the run
    return False


def fetch_job(queue_name: str, job_id: str):
    """The job, whichever queue it was put on: Queue.fetch_job answers None for a job of another
    queue, and a training may be on `gpu` or `default`."""
    queue = django_rq.get_queue(queue_name)
    try:
        return queue.job_class.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        return None


def _job_failure(job) -> str:
    """The last line of rq's record of why the job failed, e.g. "DeserializationError"."""
    result = job.latest_result()
    lines = (getattr(result, "exc_string", "") or "").strip().splitlines()
    return lines[-1][:200] if lines else f"the job {job.get_status()} in the queue"
