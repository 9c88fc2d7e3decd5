"""Writes: every change to projects, classes, images and runs goes through here.

Functions take keyword-only arguments and objects the caller already fetched with an
access check (see selectors.py), so ownership is never re-decided here.
"""
import json
import logging
import math
import re
import secrets
import shutil
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import django_rq
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from django.core.files.storage import default_storage

from transferapp import blobs, grouping, intake, quotas, selectors
from transferapp.engine.config import TrainConfig
from transferapp.engine.features import cached_feature_digests, forget_cached_features
from transferapp.engine.zoo import get_base
from transferapp.models import ApiKey, BatchPrediction, Image, ImportJob, Label, Project, TrainingRun

logger = logging.getLogger(__name__)

QUEUE_DOWN = "The job queue (Redis) could not be reached, so this was not started. Try again in a moment; if it persists, ask your administrator to check Redis."


class ServiceError(Exception):
    """A user-facing refusal: the message is shown as is."""


def project_create(*, owner, name: str) -> Project:
    name = _clean_name(name, "Project name")
    with transaction.atomic():
        quotas.lock_owner(owner)
        _refuse_if(quotas.project_refusal(owner=owner))
        return Project.objects.create(owner=owner, name=name)


def _refuse_if(reason: str) -> None:
    if reason:
        raise ServiceError(reason)


def project_rename(*, project: Project, name: str) -> Project:
    project.name = _clean_name(name, "Project name")
    project.save(update_fields=["name"])
    return project


def project_set_image_options(*, project: Project, no_mirroring: bool, group_by: str, group_folder_level: int = 1) -> Project:
    """"Images must not be mirrored" and what ties images together (see grouping.py)."""
    if group_by not in Project.GroupBy.values:
        raise ServiceError("Choose what ties images together from the list.")
    if not 1 <= group_folder_level <= 10:
        raise ServiceError("The folder level must be between 1 and 10.")
    project.no_mirroring, project.group_by, project.group_folder_level = no_mirroring, group_by, group_folder_level
    project.save(update_fields=["no_mirroring", "group_by", "group_folder_level"])
    return project


INTENDED_USE_MAX_CHARS = 5000


def project_set_intended_use(*, project: Project, text: str) -> Project:
    """The owner's text on intended use and limitations, printed in the training reports."""
    text = text.strip()
    if len(text) > INTENDED_USE_MAX_CHARS:
        raise ServiceError(f"Keep the intended use and limitations under {INTENDED_USE_MAX_CHARS} characters.")
    project.intended_use = text
    project.save(update_fields=["intended_use"])
    return project


def project_set_class_order(*, project: Project, ordered: bool, order_text: str = "") -> Project:
    """Whether the classes are grades, and their order as the user typed it ("KL0, KL2, KL3"):
    blank keeps the natural order of the names; otherwise every class, once, lowest first."""
    names = [label.name for label in project.labels.all()]
    order = _names_in_order(order_text, names)
    if order:
        unknown = [name for name in order if name not in names]
        if unknown:
            raise ServiceError(f"No class is called {', '.join(unknown)}: use the class names, separated by commas.")
        if len(set(order)) != len(order):
            raise ServiceError("A class is named twice in the order: name each class once, lowest first.")
        if set(order) != set(names):
            left_out = ", ".join(sorted(set(names) - set(order)))
            raise ServiceError(f"The order leaves out {left_out}: name every class, lowest first.")
    project.ordered_classes, project.class_order = ordered, order
    project.save(update_fields=["ordered_classes", "class_order"])
    return project


def _names_in_order(text: str, names: list[str]) -> list[str]:
    """The comma-separated names, where a class whose own name holds a comma ("grade 1, mild") is
    recognised as one name: the longest run of pieces that names a class wins."""
    pieces = [piece.strip() for piece in text.split(",")]
    order, i = [], 0
    while i < len(pieces):
        end = next((j for j in range(len(pieces), i, -1) if ", ".join(pieces[i:j]) in names), None)
        if end is None:
            order += [pieces[i]] if pieces[i] else []  # not a class: reported by the caller
            i += 1
        else:
            order.append(", ".join(pieces[i:end]))
            i = end
    return order


def project_delete(*, project: Project) -> None:
    project_id = project.pk
    sha256s = set(Image.all_objects.filter(project=project).values_list("sha256", flat=True))
    uploaded_zips = list(project.imports.exclude(upload_path="").values_list("upload_path", flat=True))
    batch_folders = list(project.batches.values_list("folder", flat=True))
    project.delete()
    _remove_project_files(project_id)
    for folder in batch_folders:  # a running batch stops at its next chunk, finding no row
        blobs.remove_stored(folder)
    features_forget_unused(sha256s=sha256s)
    for kept in uploaded_zips:  # a queued import's job will find no row; a running one stops at its next file
        blobs.discard_upload(kept)


def _remove_project_files(project_id: int) -> None:
    if blobs.s3_mode():
        blobs.remove_folder(f"projects/{project_id}")
        blobs.remove_folder(f"artifacts/project-{project_id}")
        return
    _remove_tree(Path(settings.MEDIA_ROOT) / "projects" / str(project_id))
    _remove_tree(Path(settings.ARTIFACTS_ROOT) / f"project-{project_id}")


def project_files_remove_if_deleted(*, project_id: int) -> None:
    """A job that was still writing when its project was deleted may have recreated the folder."""
    if not Project.objects.filter(pk=project_id).exists():
        _remove_project_files(project_id)


def label_create(*, project: Project, name: str) -> Label:
    return Label.objects.create(project=project, name=_free_label_name(project, name))


def label_rename(*, label: Label, name: str) -> Label:
    label.name = _free_label_name(label.project, name, exclude=label)
    label.save(update_fields=["name"])
    return label


def _free_label_name(project: Project, name: str, exclude: Label | None = None) -> str:
    """The cleaned name, if no other class of the project has it (ignoring case)."""
    name = _clean_name(label_name(name), "Class name")
    others = project.labels.exclude(pk=exclude.pk) if exclude else project.labels.all()
    if others.filter(name__iexact=name).exists():
        raise ServiceError(f"There is already a class called “{name}”.")
    return name


def label_delete(*, label: Label) -> None:
    images = list(Image.all_objects.filter(label=label))  # the trashed ones' files go too
    label.delete()
    _delete_image_files(label.project_id, images)


def confirm_name(*, typed: str, name: str, what: str) -> bool:
    """A class or project is deleted only when its name is typed: no undo is offered for those."""
    typed = (typed or "").strip()
    if typed != name and not (what == "class" and label_name(typed) == name):  # "a<b" deletes the class "a‹b"
        raise ServiceError(f"Type the {what} name “{name}” to confirm that it should be deleted.")
    return True


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


def image_add_uploaded(*, label: Label, uploaded) -> UploadOutcome:
    """An uploaded file: its size is checked before it is read into memory."""
    try:
        intake.check_size(uploaded.size, max_upload_bytes())
    except intake.ImageRejected as exc:
        return UploadOutcome(name=uploaded.name, error=str(exc))
    return image_add(label=label, name=uploaded.name, data=uploaded.read())


def image_add(*, label: Label, name: str, data: bytes, split: str = "") -> UploadOutcome:
    """Store one uploaded file in a class, or say (for this file only) why not."""
    try:
        checked = intake.check_image(data, max_bytes=max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        return UploadOutcome(name=name, error=str(exc))
    existing = Image.all_objects.filter(project_id=label.project_id, sha256=checked.sha256).select_related("label").first()
    if existing and existing.deleted_at is not None:
        return UploadOutcome(name=name, image=_bring_back(existing, label, name, split))
    if existing:
        return UploadOutcome(name=name, error=_duplicate_message(existing, label), skipped=existing.label_id == label.pk,
                             duplicate_of=existing)
    over_quota = quotas.image_refusal(owner=label.project.owner_id, size=len(checked.data))
    if over_quota:
        return UploadOutcome(name=name, error=over_quota)
    try:
        return UploadOutcome(name=name, image=_store_image(label, name, checked, split))
    except _OverQuota as over:
        return UploadOutcome(name=name, error=str(over))
    except _StoredMeanwhile as race:  # the same file, uploaded twice at once: the first one is kept
        existing = race.existing
        return UploadOutcome(name=name, error=_duplicate_message(existing, label), skipped=existing.label_id == label.pk)


class _StoredMeanwhile(Exception):
    def __init__(self, existing: Image):
        self.existing = existing


def _bring_back(image: Image, label: Label, name: str, split: str) -> Image:
    """The same bytes, deleted a moment ago and uploaded again: the trashed row comes back here."""
    image.label, image.original_name, image.split, image.deleted_at = label, name[:255], split, None
    image.save(update_fields=["label", "original_name", "split", "deleted_at"])
    return image


def _duplicate_message(existing: Image, label: Label) -> str:
    if existing.label_id == label.pk:
        return f"Already in this class (as “{existing.original_name}”)."
    return f"The same image is already in class “{existing.label.name}”: one image cannot have two labels."


def _store_image(label: Label, name: str, checked: intake.CheckedImage, split: str) -> Image:
    image = Image(
        project_id=label.project_id,
        label=label,
        split=split,
        dhash=checked.dhash,
        sha256=checked.sha256,
        original_name=name[:255],
        width=checked.width,
        height=checked.height,
        size_bytes=len(checked.data),
        grayscale=checked.grayscale,
        patient_key=grouping.patient_key(label.project_id, checked.patient_id),
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
        existing = Image.all_objects.filter(project_id=label.project_id, sha256=checked.sha256).select_related("label").first()
        if existing is None:
            raise ServiceError("The class or project was deleted while this file was being added.") from None
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


def import_create(*, project: Project, uploaded) -> ImportJob:
    """Keep the uploaded zip (on disk or in the bucket, streamed in chunks) and queue its import."""
    _refuse_if(quotas.import_refusal(owner=project.owner_id))
    try:
        kept = blobs.keep_upload(uploaded, "imports")
    except blobs.storage_errors() as exc:
        raise ServiceError(_not_stored(exc)) from None
    with transaction.atomic():
        quotas.lock_owner(project.owner_id)
        refusal = quotas.import_refusal(owner=project.owner_id)  # again: one may have started meanwhile
        if refusal:
            blobs.discard_upload(kept)
            raise ServiceError(refusal)
        job = ImportJob.objects.create(project=project, source_name=uploaded.name[:255], upload_path=kept)
        job.job_id = f"import-{job.pk}"
        job.save(update_fields=["job_id"])
        _on_commit_or_fail(lambda: _enqueue_import(job), on_failure=lambda: _import_not_queued(job))
    return job


def _not_stored(exc: Exception) -> str:
    where = "its object store (S3_BUCKET)" if blobs.s3_mode() else "its disk"
    return (f"The server could not store the files ({getattr(exc, 'strerror', None) or exc}). Try again later, or "
            f"ask your administrator to check {where}.")


def _enqueue_import(job: ImportJob) -> None:
    queue = django_rq.get_queue("intake", commit_mode="auto")
    queue.enqueue("transferapp.tasks.run_import", job.pk, job_id=job.job_id)


def _import_not_queued(job: ImportJob) -> None:
    _import_fail(job, QUEUE_DOWN, among=[ImportJob.Status.QUEUED])


def _import_fail(job: ImportJob, error: str, *, among: list[str], rows=None) -> None:
    """Fail an import that is in one of these states (among `rows`, if given: the row as a reaper
    saw it); its zip goes (what was imported stays)."""
    rows = ImportJob.objects.filter(pk=job.pk) if rows is None else rows
    if rows.filter(status__in=among).update(
        status=ImportJob.Status.FAILED, error=error, finished_at=timezone.now()
    ):
        blobs.discard_upload(job.upload_path)


def import_entries(*, project: Project, entries, on_progress=None, counts: dict | None = None,
                   earlier_try_since: datetime | None = None) -> dict:
    """Import archive/folder entries one by one; returns counts (from `counts`, an earlier try's, on)
    and a per-file report of these entries.

    Each file is stored as soon as it is checked, so a failure halfway keeps what came before. A
    later try of an import (see tasks.run_import) counts a file its earlier try stored (the same
    name, in the same class, since `earlier_try_since`) as imported, not as a duplicate.
    """
    labels = {label.name.lower(): label for label in project.labels.all()}
    summary = {"accepted": 0, "skipped": 0, "junk": 0, **(counts or {}), "report": [], "created_classes": []}
    for entry in entries:
        _import_one(project, entry, labels, summary, earlier_try_since)
        if on_progress:
            on_progress(summary)
    if summary["accepted"]:
        features_schedule(project=project)
    return summary


def _import_one(project: Project, entry, labels: dict, summary: dict, earlier_try_since: datetime | None) -> None:
    if entry.junk:
        summary["junk"] += 1
        return
    reason, class_name = entry.skip, label_name(entry.label)
    if not reason:
        try:
            outcome = image_add(label=_label_for(project, class_name, labels, summary), name=entry.name, data=entry.read(), split=entry.split)
            reason = "" if _stored_by_an_earlier_try(outcome, earlier_try_since) else outcome.error
        except (ValueError, OSError, ServiceError) as exc:
            reason = str(exc)
    summary["skipped" if reason else "accepted"] += 1
    summary["report"].append({"name": entry.name, "label": class_name, "ok": not reason, "reason": reason})


def _stored_by_an_earlier_try(outcome: UploadOutcome, since: datetime | None) -> bool:
    same = outcome.duplicate_of
    return bool(since and same and outcome.skipped and same.original_name == outcome.name[:255] and same.created_at >= since)


def _label_for(project: Project, name: str, labels: dict, summary: dict) -> Label:
    name = label_name(name)  # a folder "a<b" is the class "a‹b", for its first file and every other
    label = labels.get(name.lower())
    if label is None:
        label = label_create(project=project, name=name)
        labels[name.lower()] = label
        summary["created_classes"].append(label.name)
    return label


def features_schedule(*, project: Project) -> None:
    """Compute new images' features in the background, so that Train finds most of them ready.

    One pending job per project is enough: it embeds every image whose features are not cached.
    """
    latest = project.runs.first()
    base_model = latest.base_model if latest else TrainConfig().base
    try:
        queue = django_rq.get_queue("intake")
        job_id = f"features-{project.pk}"
        pending = queue.fetch_job(job_id)
        if pending is not None and pending.get_status(refresh=False) in ("queued", "deferred", "scheduled", "started"):
            # A running warm-up misses the newest images; the training embeds those few itself.
            return
        queue.enqueue("transferapp.tasks.precompute_features", project.pk, base_model, job_id=job_id, result_ttl=60)
    except RedisError:
        logger.warning("Feature warm-up not queued for project %s: Redis unreachable", project.pk)


def image_delete(*, image: Image) -> None:
    images_delete(images=[image])


def images_move(*, images: list[Image], label: Label) -> int:
    """Relabel images (all from label's project: the caller selected them through selectors)."""
    ids = [image.pk for image in images if image.project_id == label.project_id]
    return Image.objects.filter(pk__in=ids).update(label=label)


def images_set_aside(*, images: list[Image], for_testing: bool) -> int:
    """Hold images out of training (scored only, as a test set), or give them back to training."""
    ids = [image.pk for image in images]
    if for_testing:
        return Image.objects.filter(pk__in=ids).update(split="test")
    return Image.objects.filter(pk__in=ids, split="test").update(split="")


def image_confirm_label(*, image: Image) -> None:
    """The user checked a suspected mislabel and says the label is right: not asked again."""
    Image.objects.filter(pk=image.pk).update(label_confirmed=True)


def image_relabel(*, image: Image, label: Label) -> None:
    """Move one image to another class of its project; a label the user chose is a checked one."""
    if label.project_id != image.project_id:
        raise ServiceError("That class belongs to another project.")
    Image.objects.filter(pk=image.pk).update(label=label, label_confirmed=True)


def run_set_alpha(*, run: TrainingRun, alpha: float) -> None:
    """The risk level of the run's prediction sets; refused below what its calibration supports."""
    floor = (run.metrics.get("trust") or {}).get("min_alpha", 0.0)
    if not math.isfinite(alpha) or alpha <= 0 or alpha < floor or alpha > 0.5:
        raise ServiceError(f"Choose a risk level between {max(floor, 0.001):g} and 0.5: with "
                           f"{(run.metrics.get('trust') or {}).get('n_calibration', 0)} calibration images a "
                           "smaller one cannot be promised.")
    TrainingRun.objects.filter(pk=run.pk).update(alpha=alpha)


def run_set_threshold(*, run: TrainingRun, positive_class: str, threshold: float | None) -> None:
    """Two-class runs: which class is positive and the score from which predictions call it."""
    if len(run.classes) != 2 or positive_class not in run.classes:
        raise ServiceError("A decision threshold needs a two-class model and one of its classes.")
    if threshold is not None and not 0 < threshold < 1:
        raise ServiceError("The threshold must be between 0 and 1.")
    TrainingRun.objects.filter(pk=run.pk).update(positive_class=positive_class, decision_threshold=threshold)


def images_delete(*, images: list[Image]) -> int:
    """Move images of one project to the trash (the caller selected them through selectors): they
    leave every list at once and can be restored until deleted_images_purge() removes them."""
    if not images:
        return 0
    deleted_images_purge(project_id=images[0].project_id)
    Image.objects.filter(pk__in=[image.pk for image in images]).update(deleted_at=timezone.now())
    return len(images)


def images_restore(*, images: list[Image]) -> int:
    """Undo a delete: the rows come back with their untouched files (selected through selectors)."""
    return Image.all_objects.filter(pk__in=[image.pk for image in images]).update(deleted_at=None)


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
        _delete_image_files(project_id, expired)
    return len(expired)


def _delete_image_files(project_id: int, images: list[Image]) -> None:
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
    return released + len(gone) + features_forget_unused(sha256s=cached_feature_digests(Path(settings.FEATURE_CACHE_DIR)))


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
        _remove_tree(folder)
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


def _stored_names(folder: str) -> list[str]:
    try:
        _, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return []
    return [f"{folder}/{name}" for name in files]


def training_start(*, project: Project, base_model: str, preset: str, config: dict) -> TrainingRun:
    problems = selectors.training_problems(project=project)
    if problems:
        raise ServiceError(" ".join(problems))
    _refuse_if(quotas.run_refusal(owner=project.owner_id))
    try:
        get_base(base_model)
        no_mirroring = selectors.project_no_mirroring(project=project)
        class_order = selectors.project_class_order(project=project) if project.ordered_classes else []
        train_config = TrainConfig.from_dict({**config, "base": base_model, "preset": preset, "no_mirroring": no_mirroring,
                                              "class_order": class_order})
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    with transaction.atomic():
        quotas.lock_owner(project.owner_id)
        _refuse_if(quotas.run_refusal(owner=project.owner_id))  # again: one may have started meanwhile
        run = TrainingRun.objects.create(
            project=project,
            base_model=base_model,
            preset=preset,
            config=asdict(train_config),
            classes=[label.name for label in project.labels.all()],
            n_images=project.images.count(),
        )
        run.job_id = f"run-{run.pk}"
        run.save(update_fields=["job_id"])
        _on_commit_or_fail(lambda: _enqueue_training(run), on_failure=lambda: _run_not_queued(run))
    return run


def _enqueue_training(run: TrainingRun) -> None:
    # rq kills a job at its timeout: leave room for the user's time budget plus features and stage 1.
    budget = TrainConfig.from_dict(run.config).time_budget_s
    timeout = max(settings.RQ_QUEUES["default"]["DEFAULT_TIMEOUT"], int(budget) + 3600)
    queue = django_rq.get_queue(_training_queue_name(), commit_mode="auto")
    queue.enqueue("transferapp.tasks.run_training", run.pk, job_id=run.job_id, job_timeout=timeout)


def _training_queue_name() -> str:
    """`gpu` while a live GPU worker is idle, else `default`, which the CPU workers serve and the GPU
    workers too once their own queue is empty (manage.py gpuworker listens on both)."""
    return "gpu" if selectors.gpu_worker_free() else "default"


def _run_not_queued(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED, error=QUEUE_DOWN, finished_at=timezone.now())


def _on_commit_or_fail(enqueue, *, on_failure) -> None:
    """Enqueue once the rows exist for the worker; if Redis is unreachable, say so on the row
    instead of leaving it "queued" with no job behind it."""

    def attempt():
        try:
            enqueue()
        except RedisError:
            logger.exception("Could not enqueue a job")
            on_failure()

    transaction.on_commit(attempt)


def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Queued runs stop at once; running ones stop at the worker's next check (a second or two)."""
    if run.is_finished:
        return run
    if run.status == TrainingRun.Status.QUEUED:
        updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now(), message="Cancelled before it started."
        )
        if updated:
            run.refresh_from_db()
            return run
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True, message="Cancelling…")
    run.refresh_from_db()
    return run


def run_check(*, run: TrainingRun) -> TrainingRun:
    """Reconcile the row (the truth) with the queue (plumbing): a page shows a run, or the reaper sweeps."""
    return run_requeue_if_lost(run=run_expire_if_stale(run=run))


def run_requeue_if_lost(*, run: TrainingRun) -> TrainingRun:
    """A queued run whose job vanished (Redis restarted without persistence) is queued again; one
    whose job failed in rq before the worker claimed it (it could not even load it) is failed."""
    if _requeue_if_lost(run, queue_name="default", enqueue=_enqueue_training,
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
        job = _fetch_job("gpu", run.job_id)
        if job is None or job.origin != "gpu" or job.get_status() != JobStatus.QUEUED or selectors.gpu_workers_online():
            return
        django_rq.get_queue("gpu").remove(run.job_id)
        logger.warning("Run %s waited for a GPU worker that went away; moving it to the CPU workers", run.pk)
        _enqueue_training(run)
    except RedisError:
        pass


def _run_fail_unclaimed(run: TrainingRun, reason: str) -> None:
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
        error=f"The worker could not start this training ({reason}). Start the training again.",
    )


def run_expire_if_stale(*, run: TrainingRun) -> TrainingRun:
    """A running run whose worker stopped reporting is run again (its next try) or, out of tries or
    asked to cancel, ended: nothing stays "running" forever. The earlier try's quick model stays
    offered until the next try has its own (tasks.ProgressReporter)."""

    def end(rows, why: str) -> None:
        ending = ({"status": TrainingRun.Status.CANCELLED, "message": "Cancelled."} if run.cancel_requested
                  else {"status": TrainingRun.Status.FAILED, "error": f"{why} Start the training again."})
        rows.update(finished_at=timezone.now(), **ending)

    _rerun_if_silent(run, enqueue=_enqueue_training, end=end, not_queued=lambda: _run_not_queued(run),
                     fresh=dict(progress=0.0, stage="", epoch=0, total_epochs=0, seconds_left=None, history=[],
                                worker_name="", device=""))
    return run


def import_check(*, job: ImportJob) -> ImportJob:
    """The import's row reconciled with its worker and its queue, as run_check does for runs. Run
    again, an import goes on after the last file its silent try reported (tasks.run_import)."""
    _rerun_if_silent(job, enqueue=_enqueue_import, not_queued=lambda: _import_fail(job, QUEUE_DOWN, among=[ImportJob.Status.QUEUED]),
                     end=lambda rows, why: _import_fail(job, f"{why} The uploaded zip was deleted: upload it again to import "
                                                        "the rest (files already imported are recognised as duplicates).",
                                                        among=[ImportJob.Status.RUNNING], rows=rows))
    if _requeue_if_lost(job, queue_name="intake", enqueue=_enqueue_import,
                        fail=lambda reason: _import_fail(job, f"The worker could not start this import ({reason}). "
                                                         "Upload the zip again.", among=[ImportJob.Status.QUEUED])):
        job.refresh_from_db()
    return job


def batch_check(*, batch: BatchPrediction) -> BatchPrediction:
    """The batch's row reconciled with its worker and its queue, as import_check does for imports."""
    _rerun_if_silent(batch, enqueue=_enqueue_batch, fresh=dict(done=0, refused=0),
                     not_queued=lambda: batch_fail(batch=batch, error=QUEUE_DOWN, among=[BatchPrediction.Status.QUEUED]),
                     end=lambda rows, why: batch_fail(batch=batch, among=[BatchPrediction.Status.RUNNING], rows=rows,
                                                      error=f"{why} The uploaded files were deleted: send them again to "
                                                      "predict them."))
    if _requeue_if_lost(batch, queue_name="intake", enqueue=_enqueue_batch,
                        fail=lambda reason: batch_fail(batch=batch, among=[BatchPrediction.Status.QUEUED],
                                                       error=f"The worker could not start this batch ({reason}). "
                                                       "Send the files again.")):
        batch.refresh_from_db()
    return batch


def _rerun_if_silent(row: TrainingRun | ImportJob | BatchPrediction, *, enqueue, end, not_queued, fresh=None) -> None:
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
            _on_commit_or_fail(lambda: enqueue(row), on_failure=not_queued)
    if not requeued and _silent_for(row) is not None:  # asked to cancel meanwhile: end it now
        _rerun_if_silent(row, enqueue=enqueue, end=end, not_queued=not_queued, fresh=fresh)


def time_limit_text(timeout_s: int | None) -> str:
    limit = f"{timeout_s} s" if timeout_s else "its setting"
    return (f"The training stopped at the time limit (TRAINING_TIMEOUT_S = {limit}). Give it a shorter time "
            "budget or fewer epochs, or ask the administrator for a longer limit.")


def _killed_in_a_living_worker(row) -> tuple[str, str]:
    """(rq's record of a job whose process was SIGKILLed under a worker that lived on, "Work-horse
    terminated unexpectedly; waitpid returned 9 (signal 9)", or ""; the time-limit sentence when
    it was rq itself that killed it at the job's timeout, or "")."""
    try:
        job = _fetch_job("default", row.job_id)
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


def _requeue_if_lost(row: TrainingRun | ImportJob | BatchPrediction, *, queue_name: str, enqueue, fail) -> bool:
    """Queue a queued row's vanished job again; fail the row if rq failed its job. True when failed."""
    if row.status != row.Status.QUEUED:
        return False
    try:
        job = _fetch_job(queue_name, row.job_id)
        if job is None:
            logger.warning("%s %s had no job in Redis; queueing it again", type(row).__name__, row.pk)
            enqueue(row)
        elif job.get_status() in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            fail(_job_failure(job))
            return True
    except RedisError:
        pass  # the page says no worker is reachable; the row keeps the run
    return False


def _fetch_job(queue_name: str, job_id: str):
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


def run_delete(*, run: TrainingRun) -> None:
    artifact_dir = run.artifact_dir
    run.delete()
    blobs.remove_stored(artifact_dir)


# A class name travels far (pages, reports, CSVs, the model's class list that API clients show), and
# zip folder names may hold anything: markup's "<" and ">" become look-alike angle quotes, so a
# folder "a<b" still imports (as "a‹b") and loses nothing; control characters go (tabs and line
# breaks become spaces), and so do the bidi overrides that make a name read differently from what
# it is. Other unicode (accents, CJK, emoji, "&", quotes) is kept: templates escape it.
_MARKUP_LOOKALIKES = str.maketrans({"<": "‹", ">": "›"})
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def label_name(name: str) -> str:
    """A class name as stored: see _MARKUP_LOOKALIKES. The same name twice gives the same result."""
    kept = (" " if char.isspace() else "" if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS else char
            for char in (name or ""))
    return "".join(kept).translate(_MARKUP_LOOKALIKES).strip()


def _clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError(f"{what} cannot be empty.")
    if len(name) > 80:
        raise ServiceError(f"{what} is too long (80 characters at most).")
    return name


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- model versions ---------------------------------------------------------------------------

def run_assign_version(*, run_id: int) -> int | None:
    """Number a succeeded run v1, v2, ... within its project (once: a run keeps its number).

    The project row is locked so two runs finishing together cannot take the same number."""
    with transaction.atomic():
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None or run.version is not None or run.status != TrainingRun.Status.SUCCEEDED:
            return run.version if run else None
        project = Project.objects.select_for_update().get(pk=run.project_id)
        project.last_version += 1
        project.save(update_fields=["last_version"])
        run.version = project.last_version
        run.save(update_fields=["version"])
        return run.version


def run_publish(*, run: TrainingRun) -> Project:
    """Make this version the project's model (predict page, API and export default to it)."""
    if run.status != TrainingRun.Status.SUCCEEDED or run.version is None:
        raise ServiceError("Only a finished, successful training can be published.")
    project = run.project
    project.published_run = run
    project.save(update_fields=["published_run"])
    return project


# --- API keys ---------------------------------------------------------------------------------

API_KEY_PREFIX = "ta_"


def api_key_create(*, project: Project, name: str = "") -> tuple[ApiKey, str]:
    """A new key for this project: (row, the key itself). The key is shown once and never stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(project=project, name=(name or "").strip()[:80], prefix=key[:ApiKey.PREFIX_LENGTH],
                                key_hash=ApiKey.hash_of(key))
    return row, key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def api_keys_revoke_for_user(*, user) -> int:
    """Revoke every key of every project of `user` (their account is being deactivated); how many.

    Revoked for good: reactivating the account later does not bring these keys back, its owner
    makes new ones. (The key lookup also refuses any key of an inactive owner, so an account
    switched off without this, from a shell say, is shut out too; its unrevoked keys would open
    again on reactivation.)"""
    return ApiKey.objects.filter(project__owner=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_key_touch(*, key: ApiKey) -> None:
    """Record "last used", at most once a minute per key (no write per prediction)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


# --- batch predictions run by the worker ------------------------------------------------------

BATCHES_AT_ONCE = 2  # per user, queued or running: one user's uploads cannot fill the intake queue


def batch_create(*, project: Project, run: TrainingRun, uploads: list, refused: list[tuple[str, str]]) -> BatchPrediction:
    """Store the uploaded files (streamed in chunks) and queue their prediction with `run`.

    `refused` are (name, reason) for files the upload handler dropped: they become error rows."""
    unfinished = BatchPrediction.objects.filter(project__owner_id=project.owner_id,
                                                status__in=[BatchPrediction.Status.QUEUED, BatchPrediction.Status.RUNNING])
    if unfinished.count() >= BATCHES_AT_ONCE:
        raise ServiceError(f"{BATCHES_AT_ONCE} batch predictions of yours are waiting or running. Send this one when one "
                           "of them has finished.")
    name = uploads[0].name if len(uploads) == 1 else f"{len(uploads)} files"
    batch = BatchPrediction(project=project, run=run, version=run.version, source_name=name[:255],
                            folder=blobs.folder_record(f"batches/{uuid.uuid4().hex}"))
    try:
        _store_batch_inputs(batch, uploads, refused)
    except blobs.storage_errors() as exc:
        try:
            blobs.remove_stored(batch.folder)
        except blobs.storage_errors():  # the bucket is unreachable: what reached it stays, unreferenced
            logger.exception("Could not remove the inputs of a batch that was not stored: %s", batch.folder)
        raise ServiceError(_not_stored(exc)) from None
    with transaction.atomic():
        batch.save()
        batch.job_id = f"batch-{batch.pk}"
        batch.save(update_fields=["job_id"])
        _on_commit_or_fail(lambda: _enqueue_batch(batch),
                           on_failure=lambda: batch_fail(batch=batch, error=QUEUE_DOWN, among=[BatchPrediction.Status.QUEUED]))
    return batch


def _store_batch_inputs(batch: BatchPrediction, uploads: list, refused: list[tuple[str, str]]) -> None:
    """The uploads, on the disk or in the bucket, and the manifest batch.stored_images reads them by."""
    manifest = [{"name": name, "error": reason} for name, reason in refused]
    for number, upload in enumerate(uploads):
        stored = str(number)  # never the user's name: it could hold a path
        blobs.store_file(batch.folder, f"{BatchPrediction.INPUTS}/{stored}", upload)
        manifest.append({"name": upload.name, "path": stored, "zip": upload.name.lower().endswith(".zip")})
    blobs.store_text(batch.folder, f"{BatchPrediction.INPUTS}/{BatchPrediction.MANIFEST}", json.dumps(manifest))


def _enqueue_batch(batch: BatchPrediction) -> None:
    queue = django_rq.get_queue("intake", commit_mode="auto")
    queue.enqueue("transferapp.tasks.run_batch", batch.pk, job_id=batch.job_id)


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
