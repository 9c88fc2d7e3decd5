"""Reads, with the per-user access check in one place.

Anything that belongs to another user (or does not exist) is a 404: we never reveal
whether someone else's project exists.
"""
from django.db.models import Count
from django.shortcuts import get_object_or_404

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


def run_get_for_user(*, user, pk) -> TrainingRun:
    return get_object_or_404(TrainingRun.objects.select_related("project"), pk=pk, project__owner=user)


def labels_with_previews(*, project: Project) -> list[Label]:
    """Classes with their image count and the newest few images for a preview strip."""
    labels = list(project.labels.annotate(n_images=Count("images")))
    for label in labels:
        label.preview = list(label.images.all()[:PREVIEW_THUMBS])
    return labels


def runs_for_project(*, project: Project):
    return project.runs.all()


def succeeded_runs(*, project: Project):
    return project.runs.filter(status=TrainingRun.Status.SUCCEEDED)


def images_by_pk(*, project: Project, pks) -> dict[int, Image]:
    return {image.pk: image for image in project.images.filter(pk__in=pks)}


def import_get_for_user(*, user, pk) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("project"), pk=pk, project__owner=user)
