"""Reads, with the per-user access check in one place.

Anything that belongs to another user (or does not exist) is a 404: we never reveal
whether someone else's project exists.
"""
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404

from transferapp import duplicates
from transferapp.models import Image, ImportJob, Label, Project, TrainingRun

PREVIEW_THUMBS = 6


def project_list_for_user(*, user):
    return Project.objects.filter(owner=user).annotate(
        n_labels=Count("labels", distinct=True), n_images=Count("images", distinct=True)
    )


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
    return dict(project.labels.annotate(n_images=Count("images")).values_list("name", "n_images"))


def test_image_counts(*, project: Project) -> dict[str, int]:
    """Images per class name set aside for testing (held out of training)."""
    return dict(project.labels.annotate(n=Count("images", filter=Q(images__split="test"))).values_list("name", "n"))


def labels_with_previews(*, project: Project) -> list[Label]:
    """Classes with their image count and the newest few images for a preview strip."""
    labels = list(project.labels.annotate(n_images=Count("images")))
    for label in labels:
        label.preview = list(label.images.all()[:PREVIEW_THUMBS])
    return labels


def runs_for_project(*, project: Project):
    return project.runs.all()


def predictable_runs(*, project: Project):
    """Finished models, and running ones whose quick first model is already on disk."""
    return project.runs.filter(
        Q(status=TrainingRun.Status.SUCCEEDED)
        | Q(status=TrainingRun.Status.RUNNING, metrics__first_model_ready=True)
    )


def latest_finished_run(*, project: Project) -> TrainingRun | None:
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED).first()


def test_image_pks(*, project: Project) -> list[int]:
    return list(project.images.filter(split="test").values_list("pk", flat=True))


def images_by_pk(*, project: Project, pks) -> dict[int, Image]:
    return {image.pk: image for image in project.images.filter(pk__in=pks)}


def import_get_for_user(*, user, pk) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("project"), pk=pk, project__owner=user)


def near_duplicate_groups(*, project: Project) -> list[list[int]]:
    """Ids of images that look the same (resized or recompressed copies), in groups of 2+."""
    hashes = dict(project.images.exclude(dhash="").values_list("pk", "dhash"))
    return duplicates.near_duplicate_groups(hashes)


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
    return warnings


def near_duplicate_images(*, project: Project) -> list[list[Image]]:
    groups = near_duplicate_groups(project=project)
    images = {image.pk: image for image in project.images.select_related("label").filter(pk__in=[pk for g in groups for pk in g])}
    return [[images[pk] for pk in group] for group in groups]
