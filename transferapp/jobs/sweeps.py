"""Bucket mode: each worker's scratch and feature caches swept of what deleted rows and ended jobs left."""

import logging
import re
import time
from pathlib import Path

from django.conf import settings

from transferapp.engine.features import cached_feature_digests
from transferapp.library import projects, trash
from transferapp.models import BatchPrediction, Image, ImportJob, TrainingRun
from transferapp.storage import blobs

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
