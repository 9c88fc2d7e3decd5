"""Deleted images: kept for Undo, then purged with their files and cached features."""

from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from transferapp.accounts import quotas
from transferapp.engine.features import forget_cached_features
from transferapp.library import history
from transferapp.models import Image, Project, TrainingRun


def images_delete(*, images: list[Image]) -> int:
    """Move images of one project to the trash (the caller selected them through selectors): they
    leave every list at once and can be restored until deleted_images_purge() removes them."""
    if not images:
        return 0
    deleted_images_purge(project_id=images[0].project_id)
    with transaction.atomic():
        # all_objects: an Inbox image (#24, no label) is not in Image.objects but is deleted the same way
        live = Image.all_objects.filter(pk__in=[image.pk for image in images], deleted_at__isnull=True)
        gone = [image.pk for image in live.only("pk")]
        live.update(deleted_at=timezone.now())
        if gone:
            history.images_event("images.deleted", project=Project.objects.get(pk=images[0].project_id), image_ids=gone)
    return len(images)


def images_restore(*, images: list[Image]) -> tuple[int, str]:
    """Undo a delete: the rows come back with their untouched files (selected through selectors), as
    many as the owner's quotas take now (the trash is not counted: uploads may have used the room
    meanwhile). Returns how many came back, and why the rest did not ("" when all did)."""
    if not images:
        return 0, ""
    owner_id = Project.objects.filter(pk=images[0].project_id).values_list("owner_id", flat=True).first()
    back, refusal = [], ""
    with transaction.atomic():
        quotas.lock_owner(owner_id)
        for image in images:
            refusal = quotas.image_refusal(owner=owner_id, size=image.size_bytes)
            if refusal:
                break
            if Image.all_objects.filter(pk=image.pk).update(deleted_at=None):
                back.append(image)
        if back:
            history.images_event("images.restored", project=Project.objects.get(pk=images[0].project_id), image_ids=[image.pk for image in back])
    return len(back), refusal


def _trash_cutoff() -> datetime:
    return timezone.now() - timedelta(minutes=settings.DELETED_IMAGES_KEPT_MINUTES)


def projects_with_expired_trash() -> list[int]:
    return list(Image.all_objects.filter(deleted_at__lt=_trash_cutoff()).values_list("project_id", flat=True).distinct())


def deleted_images_purge(*, project_id: int) -> int:
    """Remove trashed images older than the undo window, rows and files."""
    cutoff = _trash_cutoff()
    expired = list(Image.all_objects.filter(project_id=project_id, deleted_at__lt=cutoff))
    if expired:
        Image.all_objects.filter(pk__in=[image.pk for image in expired]).delete()
        delete_image_files(project_id, expired)
    return len(expired)


def delete_image_files(project_id: int, images: list[Image]) -> None:
    # A running training may still read these files (stage 2 re-reads images every epoch): then
    # they stay until the run ends and project_purge_files() removes them.
    if _training_now(project_id):
        return
    # Another project may hold the same bytes under its own folder, so paths never collide.
    for image in images:
        for field in (image.file, image.thumbnail):
            if field:
                field.storage.delete(field.name)
    features_forget_unused(sha256s={image.sha256 for image in images})


def features_forget_unused(*, sha256s) -> int:
    """Remove the cached features of contents that no image row has any more (in any project:
    projects may share bytes), so a deleted image leaves nothing derived from it on disk."""
    wanted = sorted(set(sha256s))
    still_used = set()
    for start in range(0, len(wanted), 500):  # bounded IN lists
        chunk = wanted[start:start + 500]
        still_used.update(Image.all_objects.filter(sha256__in=chunk).values_list("sha256", flat=True))
    return forget_cached_features(Path(settings.FEATURE_CACHE_DIR), set(wanted) - still_used)


def _training_now(project_id: int) -> bool:
    return TrainingRun.objects.filter(project_id=project_id, status=TrainingRun.Status.RUNNING).exists()


def project_purge_files(*, project_id: int, older_than: datetime) -> int:
    """Remove image files that no image row refers to any more (deleted during a training).

    Only files older than `older_than` (the run's start): an upload in progress stores its file
    a moment before its row, and must not be taken for an orphan.
    """
    if _training_now(project_id):
        return 0
    rows = Image.all_objects.filter(project_id=project_id).values_list("file", "thumbnail")  # the trash keeps its files
    referenced = {name for pair in rows for name in pair if name}
    removed = 0
    for folder in ("images", "thumbs"):  # through the storage: the same on disk and in a bucket
        for name in _stored_names(f"projects/{project_id}/{folder}"):
            if name not in referenced and default_storage.get_modified_time(name) < older_than:
                default_storage.delete(name)
                removed += 1
    return removed


def _stored_names(folder: str) -> list[str]:
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return []
    return [f"{folder}/{name}" for name in files]
