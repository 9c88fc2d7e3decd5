"""Reads, with the per-user access check in one place.

Anything that belongs to another user (or does not exist) is a 404: we never reveal
whether someone else's project exists.
"""
from datetime import timedelta

import django_rq
from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Count, OuterRef, Q, Subquery
from PIL import Image as PILImage
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rq import Worker

from transferapp import duplicates, grouping
from transferapp.engine.config import TrainConfig
from transferapp.engine.ordinal import natural_order
from transferapp.models import ApiKey, BatchPrediction, Image, ImportJob, Label, Project, TrainingRun

PREVIEW_THUMBS = 6
# Joins do not go through Image's default manager: counts leave the trash out themselves.
LIVE_IMAGES = Q(images__deleted_at__isnull=True)
MIN_CLASSES = 2
MIN_IMAGES_PER_CLASS = 5  # training_problems() says the same in words


def project_list_for_user(*, user):
    return Project.objects.filter(owner=user).annotate(
        n_labels=Count("labels", distinct=True), n_images=Count("images", filter=LIVE_IMAGES, distinct=True)
    )


def project_overviews(*, user) -> list[Project]:
    """The user's projects with counts, their latest run and a one-word status, in four queries."""
    latest_run = TrainingRun.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    projects = list(project_list_for_user(user=user).annotate(latest_run_pk=Subquery(latest_run)))
    runs = TrainingRun.objects.in_bulk([p.latest_run_pk for p in projects if p.latest_run_pk])
    counts, held = {}, {}
    rows = Label.objects.filter(project__in=projects).annotate(
        n=Count("images", filter=LIVE_IMAGES), held=Count("images", filter=Q(images__split="test") & LIVE_IMAGES))
    for row in rows.values("project_id", "name", "n", "held"):
        counts.setdefault(row["project_id"], {})[row["name"]] = row["n"]
        held.setdefault(row["project_id"], {})[row["name"]] = row["held"]
    for project in projects:
        project.last_run = runs.get(project.latest_run_pk)
        problems = problems_for_counts(counts.get(project.pk, {}), held_out=held.get(project.pk, {}))
        project.status_text, project.status_css = _project_status(project, problems)
    return projects


def _project_status(project: Project, problems: list[str]) -> tuple[str, str]:
    """The training rules of problems_for_counts(), in one word for the project list."""
    run = project.last_run
    if run is not None and not run.is_finished:
        return "Training", "running"
    if project.n_labels < MIN_CLASSES:
        return "Needs classes", "queued"
    if problems:
        return "Needs images", "queued"
    if run is not None and run.status == TrainingRun.Status.SUCCEEDED:
        return "Trained", "succeeded"
    return "Ready to train", "ready"


def project_get_for_user(*, user, pk) -> Project:
    return get_object_or_404(Project, pk=pk, owner=user)


def label_get_for_user(*, user, project_pk, pk) -> Label:
    return get_object_or_404(Label.objects.select_related("project"), pk=pk, project_id=project_pk, project__owner=user)


def image_get_for_user(*, user, pk) -> Image:
    return get_object_or_404(Image.objects.select_related("project", "label"), pk=pk, project__owner=user)


def images_in_label(*, label: Label, pks) -> list[Image]:
    """The selected images that really are in this (already access-checked) class."""
    clean = [int(pk) for pk in pks if str(pk).isdigit()]
    return list(label.images.filter(pk__in=clean))


def run_get_for_user(*, user, pk) -> TrainingRun:
    return get_object_or_404(TrainingRun.objects.select_related("project"), pk=pk, project__owner=user)


def image_counts(*, project: Project) -> dict[str, int]:
    """Images per class name, classes without images included."""
    return dict(project.labels.annotate(n_images=Count("images", filter=LIVE_IMAGES)).values_list("name", "n_images"))


def test_image_counts(*, project: Project) -> dict[str, int]:
    """Images per class name set aside for testing (held out of training)."""
    return dict(project.labels.annotate(n=Count("images", filter=Q(images__split="test") & LIVE_IMAGES)).values_list("name", "n"))


def labels_with_previews(*, project: Project) -> list[Label]:
    """Classes with their image count and the newest few images for a preview strip."""
    labels = list(project.labels.annotate(n_images=Count("images", filter=LIVE_IMAGES)))
    for label in labels:
        label.preview = list(label.images.all()[:PREVIEW_THUMBS])
    return labels


def runs_for_project(*, project: Project):
    return project.runs.all()


def predictable_runs(*, project: Project):
    """Finished models, and running, cancelled or failed ones whose quick first model is on disk
    (it was complete before the run stopped: a worker that died later does not spoil it), queued
    ones too (a run queued again after its worker died offers its earlier try's)."""
    unfinished = [TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING, TrainingRun.Status.CANCELLED,
                  TrainingRun.Status.FAILED]
    return project.runs.filter(
        Q(status=TrainingRun.Status.SUCCEEDED) | Q(status__in=unfinished, metrics__first_model_ready=True)
    )


def latest_finished_run(*, project: Project) -> TrainingRun | None:
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED).first()


def images_by_pk(*, project: Project, pks) -> dict[int, Image]:
    return {image.pk: image for image in project.images.filter(pk__in=pks)}


def deleted_images_in_project(*, project: Project, pks) -> list[Image]:
    """Trashed images of this (already access-checked) project, for an undo."""
    clean = [int(pk) for pk in pks if str(pk).isdigit()]
    return list(Image.all_objects.filter(project=project, deleted_at__isnull=False, pk__in=clean))


def import_get_for_user(*, user, pk) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("project"), pk=pk, project__owner=user)


def batch_get_for_user(*, user, pk) -> BatchPrediction:
    return get_object_or_404(BatchPrediction.objects.select_related("project"), pk=pk, project__owner=user)


# The page polls every second while an import runs: it shows this many skipped files at most.
SKIPPED_ROWS_SHOWN = 1000


def import_skipped_rows(*, job: ImportJob) -> list:
    return list(job.report_rows.filter(ok=False)[:SKIPPED_ROWS_SHOWN])


def near_duplicate_groups(*, project: Project) -> list[list[int]]:
    """Ids of images that look the same (resized or recompressed copies), in groups of 2+."""
    hashes = dict(project.images.exclude(dhash="").values_list("pk", "dhash"))
    return duplicates.near_duplicate_groups(hashes, signature=_thumbnail_signatures(project))


def near_duplicate_pairs(*, project: Project) -> list[tuple[int, int]]:
    hashes = dict(project.images.exclude(dhash="").values_list("pk", "dhash"))
    return duplicates.near_duplicate_pairs(hashes, signature=_thumbnail_signatures(project))


def _thumbnail_signatures(project: Project):
    """Grey signatures read from the stored thumbnails, only for the images a hash match asks about."""
    names = dict(project.images.values_list("pk", "thumbnail"))
    cache = {}

    def signature(pk):
        if pk not in cache:
            try:
                with default_storage.open(names[pk], "rb") as f:
                    cache[pk] = duplicates.grey_signature(PILImage.open(f))
            except (KeyError, OSError, ValueError):  # no or unreadable thumbnail: the hash alone decides
                cache[pk] = None
        return cache[pk]

    return signature


def project_no_mirroring(*, project: Project) -> bool:
    """The user's choice, else on for projects of DICOM images (left/right matter in radiology)."""
    if project.no_mirroring is not None:
        return project.no_mirroring
    return project.images.filter(file__endswith=".dcm").exists()


def project_class_order(*, project: Project) -> list[str]:
    """The project's classes lowest grade first: the saved order, then any class it does not name
    in the natural order of the names (KL2 before KL10)."""
    names = [label.name for label in project.labels.all()]
    saved = [name for name in project.class_order if name in names]
    return saved + natural_order(name for name in names if name not in saved)


def project_has_grayscale(*, project: Project) -> bool:
    return project.images.filter(grayscale=True).exists()


def group_keys(*, project: Project) -> dict[int, str]:
    """Each image's group key under the project's rule ("" when none applies)."""
    if not project.group_by:
        return {}
    rows = project.images.values_list("pk", "original_name", "patient_key")
    return {pk: grouping.group_key(group_by=project.group_by, folder_level=project.group_folder_level,
                                   original_name=name, patient=patient) for pk, name, patient in rows}


def split_groups(*, project: Project) -> list[list[int]]:
    """Images every split keeps on one side: the project's groups joined with every near-identical pair."""
    return grouping.merge([near_duplicate_pairs(project=project), grouping.keyed_groups(group_keys(project=project))])


def groups_broken_by_imported_split(*, project: Project) -> list[list[Image]]:
    """Groups of the project's rule that an imported train/val split puts on both sides (a test
    image does not count as a side: training holds its whole group out with it)."""
    if not project.images.filter(split__in=["train", "val"]).exists():
        return []
    splits = dict(project.images.values_list("pk", "split"))
    broken = grouping.broken_by_split(grouping.keyed_groups(group_keys(project=project)), splits)
    images = images_by_pk(project=project, pks=[pk for group in broken for pk in group])
    return [[images[pk] for pk in group] for group in broken]


def training_warnings(*, project: Project, groups: list[list[Image]] | None = None) -> list[str]:
    """Things that make a model worse, said before training (training is still allowed)."""
    counts = image_counts(project=project)
    warnings = [
        f"“{name}” has only {count} image{'' if count == 1 else 's'}; 10 or more per class give a more reliable model."
        for name, count in counts.items()
        if 0 < count < 10
    ]
    non_empty = [c for c in counts.values() if c]
    if len(non_empty) >= 2 and max(non_empty) > 3 * min(non_empty):
        warnings.append(
            f"The classes are out of balance ({max(non_empty)} vs {min(non_empty)} images); training compensates, "
            "but more images of the small classes would help."
        )
    groups = near_duplicate_images(project=project) if groups is None else groups
    crossing = [group for group in groups if len({image.label_id for image in group}) > 1]
    if crossing:
        warnings.append(
            f"{len(crossing)} group(s) of near-identical images sit in different classes: check their labels."
        )
    for group in groups_broken_by_imported_split(project=project)[:5]:
        sides = ", ".join(f"{image.original_name} ({image.split or 'train'})" for image in group[:8])
        warnings.append(f"The imported split puts one group on both sides of the train/validation split: {sides}. "
                        "Validation then sees what training saw; move them to one side or let the run split.")
    return warnings


def near_duplicate_images(*, project: Project) -> list[list[Image]]:
    groups = near_duplicate_groups(project=project)
    images = {image.pk: image for image in project.images.select_related("label").filter(pk__in=[pk for g in groups for pk in g])}
    return [[images[pk] for pk in group] for group in groups]


def small_data_note(*, project: Project) -> str:
    """What a run of this project will do differently because it is small (engine: is_small_data)."""
    if project.images.filter(split="val").exists():  # an imported split is used as given (tasks._split)
        return ""
    held = test_image_counts(project=project)
    trained = [count - held.get(name, 0) for name, count in image_counts(project=project).items() if count]
    below = TrainConfig.small_data_below
    if not trained or min(trained) >= below:
        return ""
    return (f"A small project: with fewer than {below} images in a class, every image trains the quick model, "
            "fine-tuning is skipped (no held-out image could show it helps), and each figure is estimated out-of-fold. "
            "“Validation split” in the advanced settings changes this.")


def training_problems(*, project: Project) -> list[str]:
    """Why this project cannot be trained yet; empty when it can."""
    return problems_for_counts(image_counts(project=project), held_out=test_image_counts(project=project))


def problems_for_counts(counts: dict[str, int], *, held_out: dict[str, int]) -> list[str]:
    """The rules at "Train" and again when the worker takes its snapshot of the images: `counts`
    are images per class, `held_out` those of them set aside for testing (never trained on)."""
    problems = []
    if len(counts) < MIN_CLASSES:
        problems.append(f"Add at least {MIN_CLASSES} classes (this project has {len(counts)}).")
    for name, count in counts.items():
        held = held_out.get(name, 0)
        if count < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count} image(s); add at least {MIN_IMAGES_PER_CLASS}.")
        elif count - held < MIN_IMAGES_PER_CLASS:
            problems.append(f"Class “{name}” has {count - held} image(s) left for training "
                            f"({held} set aside for testing); keep at least {MIN_IMAGES_PER_CLASS} for training.")
    return problems


def workers_online() -> bool:
    """Whether any training worker is listening, so a queued run's page can say why it waits."""
    try:
        return bool(Worker.all(queue=django_rq.get_queue("default"))) or gpu_workers_online()
    except Exception:  # Redis down: the page still renders; the run stays queued in the database
        return False


def gpu_workers_online() -> bool:
    """Whether a GPU worker (workers.GpuWorker) has said it is alive within GPU_WORKER_TTL_S + 60 s.
    Its registration would also expire then; the heartbeat check does not wait for Redis to notice."""
    return bool(_live_gpu_workers())


def gpu_worker_free() -> bool:
    """Whether a live GPU worker is idle: a training sent to `gpu` then starts now, instead of
    waiting behind one that may run for hours while the CPU workers sit idle."""
    return any(w.get_state() == "idle" for w in _live_gpu_workers())


def _live_gpu_workers() -> list:
    horizon = timezone.now() - timedelta(seconds=settings.GPU_WORKER_TTL_S + 60)
    workers = Worker.all(queue=django_rq.get_queue("gpu"))
    return [w for w in workers if w.last_heartbeat is not None and w.last_heartbeat > horizon]


def other_labels(*, label: Label) -> list[Label]:
    """The classes an image of `label` can be moved to."""
    return list(label.project.labels.exclude(pk=label.pk))


# --- model versions and API keys ----------------------------------------------------------------

def versions_for_project(*, project: Project):
    """Succeeded runs, newest version first."""
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED, version__isnull=False).order_by("-version")


def model_run(*, project: Project, version: int | None = None) -> TrainingRun | None:
    """The run that answers for the project: version `version`, else the published one, else the latest."""
    versions = versions_for_project(project=project)
    if version is not None:
        return versions.filter(version=version).first()
    if project.published_run_id:
        published = versions.filter(pk=project.published_run_id).first()
        if published:
            return published
    return versions.first()


def compared_versions(*, project: Project, before, after) -> tuple[TrainingRun | None, TrainingRun | None]:
    """The two versions the compare page shows: the ones named (version numbers, as typed in the
    URL), else the project's model and the version before it (or, for v1, the newest other)."""
    versions = {run.version: run for run in versions_for_project(project=project)}
    # isdigit() alone admits "²" and 5,000-digit strings, which int() refuses: HTTP 500.
    named = [versions.get(int(v)) if str(v).isascii() and str(v).isdigit() and len(str(v)) < 10 else None
             for v in (before, after)]
    if all(named):
        return named[0], named[1]
    current = model_run(project=project)
    if current is None:
        return None, None
    older = [v for v in versions if v < current.version]
    if older:
        return versions[max(older)], current
    newer = [v for v in versions if v > current.version]
    return (current, versions[max(newer)]) if newer else (current, None)


def api_keys_for_project(*, project: Project):
    return project.api_keys.all()


def api_key_get_for_user(*, user, pk) -> ApiKey:
    return get_object_or_404(ApiKey, pk=pk, project__owner=user)


def api_key_for_secret(*, key: str) -> ApiKey | None:
    """The active key with this secret, or None (unknown, malformed, revoked, or its owner's account
    deactivated: is_active=False shuts out every key of theirs, however the account was switched off)."""
    row = (ApiKey.objects.select_related("project")
           .filter(prefix=key[:ApiKey.PREFIX_LENGTH], key_hash=ApiKey.hash_of(key), project__owner__is_active=True).first())
    return row if row is not None and row.is_active else None
