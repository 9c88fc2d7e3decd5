"""Batch predictions run by the worker: stored inputs, queued, failed, expired."""

import json
import logging
import uuid
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from transferapp.accounts import quotas
from transferapp.library import errors
from transferapp.models import BatchPrediction, Project, TrainingRun
from transferapp.serving import batch as serving_batch
from transferapp.storage import blobs

logger = logging.getLogger(__name__)

# --- batch predictions run by the worker ------------------------------------------------------

BATCHES_AT_ONCE = 2  # per user, queued or running: one user's uploads cannot fill the intake queue


def batch_create(*, project: Project, run: TrainingRun, uploads: list, refused: list[tuple[str, str]]) -> BatchPrediction:
    """Store the uploaded files (streamed in chunks) and queue their prediction with `run`.

    `refused` are (name, reason) for files the upload handler dropped: they become error rows."""
    errors.refuse_if(_batch_refusal(project.owner_id))
    batch = BatchPrediction(project=project, run=run, version=run.version, source_name=serving_batch.source_name(uploads)[:255],
                            folder=blobs.folder_record(f"batches/{uuid.uuid4().hex}"))
    try:
        _store_batch_inputs(batch, uploads, refused)
    except blobs.storage_errors() as exc:
        try:
            blobs.remove_stored(batch.folder)
        except blobs.storage_errors():  # the bucket is unreachable: what reached it stays, unreferenced
            logger.exception("Could not remove the inputs of a batch that was not stored: %s", batch.folder)
        raise errors.ServiceError(errors.not_stored(exc)) from None
    with transaction.atomic():
        quotas.lock_owner(project.owner_id)
        refusal = _batch_refusal(project.owner_id)  # again: another request may have sent one meanwhile
        if refusal:
            blobs.remove_stored(batch.folder)
            raise errors.ServiceError(refusal)
        batch.save()
        batch.job_id = f"batch-{batch.pk}"
        batch.save(update_fields=["job_id"])
        errors.on_commit_or_fail(lambda: enqueue_batch(batch),
                           on_failure=lambda: batch_fail(batch=batch, error=errors.QUEUE_DOWN, among=[BatchPrediction.Status.QUEUED]))
    return batch


def _batch_refusal(owner_id: int) -> str:
    unfinished = BatchPrediction.objects.filter(project__owner_id=owner_id,
                                                status__in=[BatchPrediction.Status.QUEUED, BatchPrediction.Status.RUNNING])
    if unfinished.count() >= BATCHES_AT_ONCE:
        return (f"{BATCHES_AT_ONCE} batch predictions of yours are waiting or running. Send this one when one of them "
                "has finished.")
    return ""


def _store_batch_inputs(batch: BatchPrediction, uploads: list, refused: list[tuple[str, str]]) -> None:
    """The uploads, on the disk or in the bucket, and the manifest batch.stored_images reads them by."""
    manifest = [{"name": name, "error": reason} for name, reason in refused]
    for number, upload in enumerate(uploads):
        stored = str(number)  # never the user's name: it could hold a path
        blobs.store_file(batch.folder, f"{BatchPrediction.INPUTS}/{stored}", upload)
        manifest.append({"name": upload.name, "path": stored, "zip": upload.name.lower().endswith(".zip")})
    blobs.store_text(batch.folder, f"{BatchPrediction.INPUTS}/{BatchPrediction.MANIFEST}", json.dumps(manifest))


def enqueue_batch(batch: BatchPrediction) -> None:
    queue = django_rq.get_queue("intake", commit_mode="auto")
    queue.enqueue("transferapp.jobs.tasks.run_batch", batch.pk, job_id=batch.job_id)


def batch_fail(*, batch: BatchPrediction, error: str, among: list[str], rows=None) -> bool:
    """Fail a batch that is in one of these states (among `rows`, if given: the row as a reaper saw
    it); its uploaded files go. True when it was failed."""
    rows = BatchPrediction.objects.filter(pk=batch.pk) if rows is None else rows
    failed = rows.filter(status__in=among).update(
        status=BatchPrediction.Status.FAILED, error=error, message="", finished_at=timezone.now())
    if failed:
        blobs.remove_stored(batch.folder, BatchPrediction.INPUTS)
    return bool(failed)


def batches_purge_expired() -> int:
    """Delete the batches (rows, CSVs, thumbnails) finished more than BATCH_KEPT_DAYS ago."""
    cutoff = timezone.now() - timedelta(days=settings.BATCH_KEPT_DAYS)
    expired = list(BatchPrediction.objects.filter(finished_at__lt=cutoff).values_list("pk", "folder"))
    for pk, folder in expired:
        blobs.remove_stored(folder)
        BatchPrediction.objects.filter(pk=pk).delete()
    return len(expired)
