"""Adding images to a class (each file checked, stored once by content) and changing their labels."""

import logging
from dataclasses import dataclass

import django_rq
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from redis.exceptions import RedisError

from transferapp.accounts import quotas
from transferapp.engine.config import TrainConfig
from transferapp.library import errors, grouping, history, intake, trash
from transferapp.models import Image, Label, Project

logger = logging.getLogger(__name__)


@dataclass
class UploadOutcome:
    """One file's fate: added, skipped (harmless: already in this class) or refused (with why)."""

    name: str
    image: Image | None = None
    error: str = ""
    skipped: bool = False
    duplicate_of: Image | None = None  # skipped: the image of the project that has these bytes

    @property
    def status(self) -> str:
        if self.image is not None:
            return "added"
        return "skipped" if self.skipped else "refused"


def max_upload_bytes() -> int:
    return settings.MAX_UPLOAD_MB * 1024 * 1024


def images_add_uploaded(*, project: Project, label: Label | None, uploads, refused=()) -> list[UploadOutcome]:
    """One upload batch (a drop of files, an API call): each file added to `label` (None: the Inbox) or
    refused with why; `refused`: (name, why) of files turned away before reading. One audit entry."""
    outcomes = [UploadOutcome(name=name, error=reason) for name, reason in refused]
    outcomes += [image_add_uploaded(label=label, project=project, uploaded=uploaded) for uploaded in uploads]
    history.uploads(project=project, to=label.name if label is not None else "", outcomes=outcomes)
    return outcomes


def image_add_uploaded(*, label: Label | None, uploaded, project: Project | None = None) -> UploadOutcome:
    """An uploaded file: its size is checked before it is read into memory. label None: the Inbox."""
    try:
        intake.check_size(uploaded.size, max_upload_bytes())
    except intake.ImageRejected as exc:
        return UploadOutcome(name=uploaded.name, error=str(exc))
    return image_add(label=label, project=project, name=uploaded.name, data=uploaded.read())


def image_add(*, label: Label | None, name: str, data: bytes, split: str = "",
              project: Project | None = None) -> UploadOutcome:
    """Store one uploaded file in a class, or in the project's Inbox when label is None (#24), or say
    (for this file only) why not."""
    project = label.project if label is not None else project
    try:
        checked = intake.check_image(data, max_bytes=max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        return UploadOutcome(name=name, error=str(exc))
    existing = Image.all_objects.filter(project_id=project.pk, sha256=checked.sha256).select_related("label").first()
    if existing and existing.deleted_at is not None:
        return UploadOutcome(name=name, image=_bring_back(existing, label, name, split))
    if existing:
        return UploadOutcome(name=name, error=_duplicate_message(existing, label), skipped=existing.label_id == _pk(label),
                             duplicate_of=existing)
    over_quota = quotas.image_refusal(owner=project.owner_id, size=len(checked.data))
    if over_quota:
        return UploadOutcome(name=name, error=over_quota)
    try:
        return UploadOutcome(name=name, image=_store_image(project, label, name, checked, split))
    except _OverQuota as over:
        return UploadOutcome(name=name, error=str(over))
    except _StoredMeanwhile as race:  # the same file, uploaded twice at once: the first one is kept
        existing = race.existing
        return UploadOutcome(name=name, error=_duplicate_message(existing, label), skipped=existing.label_id == _pk(label))


def _pk(label: Label | None) -> int | None:
    return label.pk if label is not None else None


class _StoredMeanwhile(Exception):
    def __init__(self, existing: Image):
        self.existing = existing


def _bring_back(image: Image, label: Label | None, name: str, split: str) -> Image:
    """The same bytes, deleted a moment ago and uploaded again: the trashed row comes back here."""
    image.label, image.original_name, image.split, image.deleted_at = label, name[:255], split, None
    image.save(update_fields=["label", "original_name", "split", "deleted_at"])
    return image


def _duplicate_message(existing: Image, label: Label | None) -> str:
    if existing.label_id == _pk(label):
        return f"Already {'in this class' if label is not None else 'in the Inbox'} (as “{existing.original_name}”)."
    if existing.label_id is None:
        return f"The same image is already in the Inbox (as “{existing.original_name}”): label it there."
    return f"The same image is already in class “{existing.label.name}”: one image cannot have two labels."


def _store_image(project: Project, label: Label | None, name: str, checked: intake.CheckedImage, split: str) -> Image:
    image = Image(
        project_id=project.pk,
        label=label,
        split=split,
        dhash=checked.dhash,
        sha256=checked.sha256,
        original_name=name[:255],
        width=checked.width,
        height=checked.height,
        size_bytes=len(checked.data),
        grayscale=checked.grayscale,
        patient_key=grouping.patient_key(project.pk, checked.patient_id),
    )
    image.file.save(f"upload.{checked.extension}", ContentFile(checked.data), save=False)
    image.thumbnail.save("thumb.jpg", ContentFile(checked.thumbnail_jpeg), save=False)
    try:
        with transaction.atomic():
            _refuse_past_the_quota_meanwhile(image)
            image.save()
    except _OverQuota as over:  # an upload beside this one took the last of the quota
        _remove_unreferenced_files(image)
        raise over
    except IntegrityError:  # the same file arrived twice at once (keep the first), or the class went
        _remove_unreferenced_files(image)
        existing = Image.all_objects.filter(project_id=project.pk, sha256=checked.sha256).select_related("label").first()
        if existing is None:
            raise errors.ServiceError("The class or project was deleted while this file was being added.") from None
        raise _StoredMeanwhile(existing) from None
    return image


class _OverQuota(Exception):
    pass


def _refuse_past_the_quota_meanwhile(image: Image) -> None:
    """The quota checked again with the owner locked, now that this image's row is about to count."""
    owner_id = Project.objects.filter(pk=image.project_id).values_list("owner_id", flat=True).first()
    if owner_id is None:
        return  # the project went: saving fails below, as it would have
    quotas.lock_owner(owner_id)
    over_quota = quotas.image_refusal(owner=owner_id, size=image.size_bytes)
    if over_quota:
        raise _OverQuota(over_quota)


def _remove_unreferenced_files(image: Image) -> None:
    """The files written for a row that could not be saved. The storage may have renamed them (the
    winner's file had the name already), and a name another row uses is never removed."""
    for field in (image.file, image.thumbnail):
        if field.name and not Image.all_objects.filter(Q(file=field.name) | Q(thumbnail=field.name)).exists():
            field.storage.delete(field.name)


def feature_base(project: Project) -> str:
    """The base whose cached features a project's background work uses (the warm-up, the Inbox's
    quick model, the map): the latest run's, else the default one."""
    latest = project.runs.first()
    return latest.base_model if latest else TrainConfig().base


def features_schedule(*, project: Project) -> None:
    """Compute new images' features in the background, so that Train finds most of them ready.

    One pending job per project is enough: it embeds every image whose features are not cached.
    """
    base_model = feature_base(project)
    try:
        queue = django_rq.get_queue("intake")
        job_id = f"features-{project.pk}"
        pending = queue.fetch_job(job_id)
        if pending is not None and pending.get_status(refresh=False) in ("queued", "deferred", "scheduled", "started"):
            # A running warm-up misses the newest images; the training embeds those few itself.
            return
        queue.enqueue("transferapp.jobs.tasks.precompute_features", project.pk, base_model, job_id=job_id, result_ttl=60)
    except RedisError:
        logger.warning("Feature warm-up not queued for project %s: Redis unreachable", project.pk)


def image_delete(*, image: Image) -> None:
    trash.images_delete(images=[image])


def images_move(*, images: list[Image], label: Label) -> int:
    """Relabel images (all from label's project: the caller selected them through selectors)."""
    ids = [image.pk for image in images if image.project_id == label.project_id]
    with transaction.atomic():
        before = list(Image.objects.filter(pk__in=ids).values_list("pk", "original_name", "label__name"))
        moved = Image.objects.filter(pk__in=ids).update(label=label)
        history.label_changes(project=label.project, changes=[(pk, name, old or "") for pk, name, old in before],
                              to=label.name, how="moved")
    return moved


def images_set_aside(*, images: list[Image], for_testing: bool) -> int:
    """Hold images out of training (scored only, as a test set), or give them back to training."""
    ids = [image.pk for image in images]
    if for_testing:
        return Image.objects.filter(pk__in=ids).update(split="test")
    return Image.objects.filter(pk__in=ids, split="test").update(split="")


def image_confirm_label(*, image: Image) -> None:
    """The user checked a suspected mislabel and says the label is right: not asked again."""
    with transaction.atomic():
        Image.objects.filter(pk=image.pk).update(label_confirmed=True)
        history.label_confirmed(image=image)


def image_relabel(*, image: Image, label: Label) -> None:
    """Move one image to another class of its project; a label the user chose is a checked one."""
    if label.project_id != image.project_id:
        raise errors.ServiceError("That class belongs to another project.")
    with transaction.atomic():
        before = list(Image.all_objects.filter(pk=image.pk).values_list("pk", "original_name", "label__name"))
        Image.objects.filter(pk=image.pk).update(label=label, label_confirmed=True)
        history.label_changes(project=label.project, changes=[(pk, name, old or "") for pk, name, old in before],
                              to=label.name, how="relabelled")
