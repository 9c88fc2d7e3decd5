"""Bucket mode: each worker's scratch and feature caches swept of what deleted rows and ended jobs left."""

import logging
import re
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from redis.exceptions import RedisError

from transferapp.engine.features import cached_feature_digests
from transferapp.library import projects, trash
from transferapp.models import (
    BatchPrediction,
    Image,
    ImportJob,
    Project,
    TrainingRun,
    WebhookDelivery,
)
from transferapp.reporting import drift
from transferapp.storage import blobs
from transferapp.webhooks import events

logger = logging.getLogger(__name__)


def scratch_sweep() -> int:
    """Bucket mode: remove from this machine's scratch cache and feature cache what belongs to
    deleted images, runs and batches, and what jobs that ended (or died with a killed worker) left
    there. The process that deleted them removed the bucket's copy and its own, not the copies other
    machines fetched; each worker's reaper calls this. Returns how many files or folders went."""
    if not blobs.s3_mode():
        return 0  # one MEDIA_ROOT: deleting removed the only copy, and jobs fetch nothing
    running = set(TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).values_list("pk", "attempt"))
    released = _scratch_release_ended_jobs(running)
    contents = blobs.scratch_contents()
    if contents is None:
        return released
    media, models, batches = contents
    kept = {record for record in models if _run_and_try(record) in running}  # a try between its busy mark and its row
    for start in range(0, len(media), 500):  # bounded IN lists; soft-deleted images keep their files
        chunk = media[start:start + 500]
        kept.update(Image.all_objects.filter(file__in=chunk).values_list("file", flat=True))
        kept.update(Image.all_objects.filter(thumbnail__in=chunk).values_list("thumbnail", flat=True))
    kept.update(TrainingRun.objects.filter(artifact_dir__in=models).values_list("artifact_dir", flat=True))
    kept.update(BatchPrediction.objects.filter(folder__in=batches).values_list("folder", flat=True))
    gone = [name for name in media + models + batches if name not in kept]
    blobs.scratch_forget(gone)
    return released + len(gone) + trash.features_forget_unused(sha256s=cached_feature_digests(Path(settings.FEATURE_CACHE_DIR)))

ORPHAN_MODEL_FOLDER_AGE_S = 3600  # a try writes its folder a moment before its row names it


def model_folders_sweep(older_than_s: float = ORPHAN_MODEL_FOLDER_AGE_S) -> int:
    """Local mode: remove model folders that no run refers to, untouched for `older_than_s`: a try
    killed with its worker (or a run deleted meanwhile) left them. Never one of a queued or running
    run, whose try may still publish it. Returns how many went."""
    if blobs.s3_mode():
        return 0  # the scratch copies go in scratch_sweep; the bucket keeps what a try stored
    root = Path(settings.ARTIFACTS_ROOT)
    referenced = {_project_and_run_folder(Path(name)) for name in
                  TrainingRun.objects.exclude(artifact_dir="").values_list("artifact_dir", flat=True)}
    unfinished = set(TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
                     .values_list("pk", flat=True))
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in root.glob("project-*/run-*"):
        run_pk = folder.name.removeprefix("run-").partition("-try-")[0]
        if (not folder.is_dir() or _project_and_run_folder(folder) in referenced or not run_pk.isdigit()
                or int(run_pk) in unfinished or _last_touched(folder) > cutoff):
            continue
        logger.warning("Removing the model folder %s: no run refers to it", folder)
        projects.remove_tree(folder)
        removed += 1
    return removed


def _project_and_run_folder(path: Path) -> str:
    """project-N/run-M[-try-K]: compared by these names, not by the whole path, so a changed
    ARTIFACTS_ROOT spelling never makes a referenced folder look orphaned."""
    return f"{path.parent.name}/{path.name}"


def _last_touched(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(entry.stat().st_mtime for entry in folder.iterdir())])
    except OSError:
        return time.time()  # changing under us: someone is writing it


def _scratch_release_ended_jobs(running_tries: set[tuple[int, int]]) -> int:
    """Releases what jobs no longer running left here; `running_tries` are the running runs' (pk, try)."""
    busy, uploads, tries = blobs.scratch_jobs()
    stale_busy = [record for record in busy if _run_and_try(record) not in running_tries]
    importing = set(ImportJob.objects.filter(status=ImportJob.Status.RUNNING, upload_path__in=uploads)
                    .values_list("upload_path", flat=True))
    predicting = {f"{folder}/try-{attempt}" for folder, attempt in
                  BatchPrediction.objects.filter(status=BatchPrediction.Status.RUNNING).values_list("folder", "attempt")}
    stale_work = [name for name in uploads if name not in importing] + [name for name in tries if name not in predicting]
    blobs.scratch_release(stale_busy, stale_work)
    return len(stale_busy) + len(stale_work)


def _run_and_try(record: str) -> tuple[int, int] | None:
    """(run pk, try) of a model folder's record: artifacts/project-N/run-M or run-M-try-K."""
    found = re.fullmatch(r"artifacts/project-\d+/run-(\d+)(?:-try-(\d+))?", record)
    return (int(found[1]), int(found[2] or 1)) if found else None


# --- drift.detected: the reporting figure, announced by the worker at most once a day a project ---

ALERT_KEPT_S = 2 * 24 * 3600  # the "already announced today" mark outlives its day

def _alert_key(project_pk: int, now) -> str:
    return f"drift-alert:{project_pk}:{now.date().isoformat()}"


def drift_check(project: Project, now=None) -> bool:
    """Emit drift.detected when this week's images drifted, at most once per project and (UTC) day:
    not when the delivery log has one of today's, and the day's mark is taken atomically (cache.add,
    in Redis), so several workers agree. True when sent."""
    now = now or timezone.now()
    key = _alert_key(project.pk, now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if WebhookDelivery.objects.filter(webhook__project=project, event="drift.detected", created_at__gte=midnight).exists():
        return False  # the delivery log is the record; the cache mark only settles two workers racing
    try:
        if cache.get(key):
            return False
        report = drift.drift_report(project, now)
        if not report["detected"] or not cache.add(key, 1, timeout=ALERT_KEPT_S):
            return False
    except RedisError:
        logger.exception("Drift check of project %s skipped: the cache is unreachable", project.pk)
        return False
    events.emit(project, "drift.detected", {
        "version": report["version"], "p_value": report["p_value"], "unlike_share": report["unlike_share"],
        "predictions": report["n"], "window_days": drift.WINDOW_DAYS, "sentence": report["sentence"]})
    return True


def drift_sweep(now=None) -> int:
    """Check every project that predicted something in the last day and has a webhook listening for
    drift.detected (the others have nobody to tell; their page computes the sentence itself).
    Returns how many events were sent."""
    now = now or timezone.now()
    active = (Project.objects.filter(predictions__created_at__gt=now - timedelta(days=1), webhooks__active=True)
              .distinct())
    sent = 0
    for project in active:
        if any("drift.detected" in hook.events for hook in project.webhooks.filter(active=True)):
            sent += drift_check(project, now)
    return sent
