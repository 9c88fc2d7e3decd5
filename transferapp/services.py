"""Writes: every change to projects, classes, images and runs goes through here.

Functions take keyword-only arguments and objects the caller already fetched with an
access check (see selectors.py), so ownership is never re-decided here.
"""
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import django_rq
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from transferapp import intake, selectors
from transferapp.engine.config import TrainConfig
from transferapp.engine.zoo import get_base
from transferapp.models import Image, ImportJob, Label, Project, TrainingRun

logger = logging.getLogger(__name__)

MIN_CLASSES = 2
QUEUE_DOWN = "The job queue (Redis) could not be reached, so this was not started. Try again in a moment; if it persists, ask your administrator to check Redis."
MIN_IMAGES_PER_CLASS = 5


class ServiceError(Exception):
    """A user-facing refusal: the message is shown as is."""


def project_create(*, owner, name: str) -> Project:
    return Project.objects.create(owner=owner, name=_clean_name(name, "Project name"))


def project_rename(*, project: Project, name: str) -> Project:
    project.name = _clean_name(name, "Project name")
    project.save(update_fields=["name"])
    return project


def project_delete(*, project: Project) -> None:
    project_id = project.pk
    project.delete()
    _remove_tree(Path(settings.MEDIA_ROOT) / "projects" / str(project_id))
    _remove_tree(Path(settings.ARTIFACTS_ROOT) / f"project-{project_id}")


def label_create(*, project: Project, name: str) -> Label:
    return Label.objects.create(project=project, name=_free_label_name(project, name))


def label_rename(*, label: Label, name: str) -> Label:
    label.name = _free_label_name(label.project, name, exclude=label)
    label.save(update_fields=["name"])
    return label


def _free_label_name(project: Project, name: str, exclude: Label | None = None) -> str:
    """The cleaned name, if no other class of the project has it (ignoring case)."""
    name = _clean_name(name, "Class name")
    others = project.labels.exclude(pk=exclude.pk) if exclude else project.labels.all()
    if others.filter(name__iexact=name).exists():
        raise ServiceError(f"There is already a class called “{name}”.")
    return name


def label_delete(*, label: Label) -> None:
    images = list(label.images.all())
    label.delete()
    _delete_image_files(label.project_id, images)


@dataclass
class UploadOutcome:
    name: str
    image: Image | None = None
    error: str = ""


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
    existing = Image.objects.filter(project_id=label.project_id, sha256=checked.sha256).select_related("label").first()
    if existing:
        return UploadOutcome(name=name, error=_duplicate_message(existing, label))
    return UploadOutcome(name=name, image=_store_image(label, name, checked, split))


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
    )
    image.file.save(f"upload.{checked.extension}", ContentFile(checked.data), save=False)
    image.thumbnail.save("thumb.jpg", ContentFile(checked.thumbnail_jpeg), save=False)
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:  # the same file arrived twice at once: keep the first
        return Image.objects.get(project_id=label.project_id, sha256=checked.sha256)
    return image


def import_create(*, project: Project, uploaded) -> ImportJob:
    """Keep the uploaded zip on disk (streamed in chunks) and queue its import."""
    folder = Path(settings.MEDIA_ROOT) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex}.zip"
    with open(target, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    with transaction.atomic():
        job = ImportJob.objects.create(project=project, source_name=uploaded.name[:255], upload_path=str(target))
        queue = django_rq.get_queue("intake", commit_mode="auto")
        _on_commit_or_fail(lambda: queue.enqueue("transferapp.tasks.run_import", job.pk, job_id=f"import-{job.pk}"),
                           on_failure=lambda: _import_not_queued(job))
    return job


def _import_not_queued(job: ImportJob) -> None:
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.FAILED, error=QUEUE_DOWN, finished_at=timezone.now())
    Path(job.upload_path).unlink(missing_ok=True)


def import_entries(*, project: Project, entries, on_progress=None) -> dict:
    """Import archive/folder entries one by one; returns counts and a per-file report.

    Each file is stored as soon as it is checked, so a failure halfway keeps what came before.
    """
    labels = {label.name.lower(): label for label in project.labels.all()}
    summary = {"accepted": 0, "skipped": 0, "junk": 0, "report": [], "created_classes": []}
    for entry in entries:
        _import_one(project, entry, labels, summary)
        if on_progress:
            on_progress(summary)
    if summary["accepted"]:
        features_schedule(project=project)
    return summary


def _import_one(project: Project, entry, labels: dict, summary: dict) -> None:
    if entry.junk:
        summary["junk"] += 1
        return
    reason, label_name = entry.skip, entry.label
    if not reason:
        try:
            outcome = image_add(label=_label_for(project, label_name, labels, summary), name=entry.name, data=entry.read(), split=entry.split)
            reason = outcome.error
        except (ValueError, OSError, ServiceError) as exc:
            reason = str(exc)
    summary["skipped" if reason else "accepted"] += 1
    summary["report"].append({"name": entry.name, "label": label_name, "ok": not reason, "reason": reason})


def _label_for(project: Project, name: str, labels: dict, summary: dict) -> Label:
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
    if alpha <= 0 or alpha < floor or alpha > 0.5:
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
    """Delete images of one project (the caller selected them through selectors)."""
    if not images:
        return 0
    Image.objects.filter(pk__in=[image.pk for image in images]).delete()
    _delete_image_files(images[0].project_id, images)
    return len(images)


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


def _training_now(project_id: int) -> bool:
    return TrainingRun.objects.filter(project_id=project_id, status=TrainingRun.Status.RUNNING).exists()


def project_purge_files(*, project_id: int, older_than: datetime) -> int:
    """Remove image files that no image row refers to any more (deleted during a training).

    Only files older than `older_than` (the run's start): an upload in progress stores its file
    a moment before its row, and must not be taken for an orphan.
    """
    if _training_now(project_id):
        return 0
    rows = Image.objects.filter(project_id=project_id).values_list("file", "thumbnail")
    referenced = {name for pair in rows for name in pair if name}
    root = Path(settings.MEDIA_ROOT)
    removed = 0
    for folder in ("images", "thumbs"):
        for path in (root / "projects" / str(project_id) / folder).glob("*"):
            orphan = path.relative_to(root).as_posix() not in referenced
            if orphan and path.stat().st_mtime < older_than.timestamp():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def training_problems(*, project: Project) -> list[str]:
    """Why this project cannot be trained yet; empty when it can."""
    counts = selectors.image_counts(project=project)
    problems = []
    if len(counts) < MIN_CLASSES:
        problems.append(f"Add at least {MIN_CLASSES} classes (this project has {len(counts)}).")
    held = selectors.test_image_counts(project=project)
    for name, count in counts.items():
        if count < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count} image(s); add at least {MIN_IMAGES_PER_CLASS}.")
        elif count - held.get(name, 0) < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count - held.get(name, 0)} image(s) left for training "
                            f"({held[name]} set aside for testing); keep at least {MIN_IMAGES_PER_CLASS} for training.")
    return problems


def training_start(*, project: Project, base_model: str, preset: str, config: dict) -> TrainingRun:
    problems = training_problems(project=project)
    if problems:
        raise ServiceError(" ".join(problems))
    try:
        get_base(base_model)
        train_config = TrainConfig.from_dict({**config, "base": base_model, "preset": preset})
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    with transaction.atomic():
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
    queue = django_rq.get_queue("default", commit_mode="auto")
    queue.enqueue("transferapp.tasks.run_training", run.pk, job_id=run.job_id, job_timeout=timeout)


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
    """Reconcile the row (the truth) with the queue (plumbing) when a page shows a run."""
    return run_requeue_if_lost(run=run_expire_if_stale(run=run))


def run_requeue_if_lost(*, run: TrainingRun) -> TrainingRun:
    """A queued run whose job vanished (Redis restarted without persistence) is queued again."""
    if run.status != TrainingRun.Status.QUEUED:
        return run
    try:
        if django_rq.get_queue("default").fetch_job(run.job_id) is None:
            logger.warning("Run %s had no job in Redis; queueing it again", run.pk)
            _enqueue_training(run)
    except RedisError:
        pass  # the page says no worker is reachable; the row keeps the run
    return run


def run_expire_if_stale(*, run: TrainingRun) -> TrainingRun:
    """A running run whose worker stopped reporting is failed, so nothing stays "running" forever."""
    if run.status != TrainingRun.Status.RUNNING or run.heartbeat_at is None:
        return run
    silent_s = (timezone.now() - run.heartbeat_at).total_seconds()
    if silent_s > settings.RUN_HEARTBEAT_TIMEOUT_S:
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED,
            finished_at=timezone.now(),
            error=f"The worker stopped responding ({int(silent_s)} s without news); it may have been restarted "
            "or run out of memory. Start the training again.",
        )
        run.refresh_from_db()
    return run


def run_delete(*, run: TrainingRun) -> None:
    artifact_dir = run.artifact_dir
    run.delete()
    if artifact_dir:
        _remove_tree(Path(artifact_dir))


def _clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError(f"{what} cannot be empty.")
    if len(name) > 80:
        raise ServiceError(f"{what} is too long (80 characters at most).")
    return name


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
