"""Reads of projects, classes, images and imports, with the per-user access check in one place."""

import re

from django.db.models import Count, Q

from transferapp.accounts import roles
from transferapp.accounts.selectors import checked_get
from transferapp.engine.ordinal import natural_order
from transferapp.models import Image, ImportJob, Label, Project

PREVIEW_THUMBS = 6
# An id from a form or a URL query: ASCII digits only (str.isdigit() accepts "²", which int() refuses)
# and short enough for a 64-bit column (a longer one overflows the database's integer).
_ID = re.compile(r"[0-9]{1,18}")


def parse_id(value) -> int | None:
    """An id a user sent, or None when it is not one."""
    text = str(value).strip()
    return int(text) if _ID.fullmatch(text) else None


def parse_ids(values) -> list[int]:
    """The ids among what a user sent (a list, or one comma-separated string); the rest is dropped."""
    if isinstance(values, str):
        values = values.split(",")
    return [i for i in (parse_id(v) for v in values) if i is not None]

# Joins do not go through Image's default manager: counts leave the trash out themselves.
LIVE_IMAGES = Q(images__deleted_at__isnull=True, images__label__isnull=False)  # the trash and the Inbox left out


def project_list_for_user(*, user):
    """The projects the user owns or is a member of (#26), each with its counts."""
    return Project.objects.filter(roles.visible_through(user, "pk")).select_related("owner").annotate(
        n_labels=Count("labels", distinct=True), n_images=Count("images", filter=LIVE_IMAGES, distinct=True)
    )


# Each *_get_for_user takes `need`, the role the action needs (roles.VIEWER ... roles.OWNER), with
# no default: a call that forgot it fails at once instead of letting a viewer write.

def project_get_for_user(*, user, pk, need: str) -> Project:
    return checked_get(Project.objects.all(), user=user, need=need, path="pk", pk=pk)


def label_get_for_user(*, user, project_pk, pk, need: str) -> Label:
    return checked_get(Label.objects.select_related("project"), user=user, need=need, pk=pk, project_id=project_pk)


def image_get_for_user(*, user, pk, need: str, inbox_too: bool = False) -> Image:
    """A live labelled image of a project the user has `need` in; with inbox_too, an Inbox image as well (#24)."""
    live = Image.all_objects.filter(deleted_at__isnull=True) if inbox_too else Image.objects
    return checked_get(live.select_related("project", "label"), user=user, need=need, pk=pk)


def images_in_label(*, label: Label, pks) -> list[Image]:
    """The selected images that really are in this (already access-checked) class."""
    clean = parse_ids(pks)
    return list(label.images.filter(pk__in=clean))


def inbox_images(*, project: Project, pks) -> list[Image]:
    """The selected images that really are in this (already access-checked) project's Inbox."""
    clean = parse_ids(pks)
    return list(Image.inbox.filter(project=project, pk__in=clean))


def inbox_preview(*, project: Project, n: int = 12) -> list[Image]:
    return list(Image.inbox.filter(project=project).order_by("inbox_unsure", "-created_at", "-pk")[:n])


def image_counts(*, project: Project) -> dict[str, int]:
    """Images per class name, classes without images included."""
    return dict(project.labels.annotate(n_images=Count("images", filter=LIVE_IMAGES)).values_list("name", "n_images"))


def test_image_counts(*, project: Project) -> dict[str, int]:
    """Images per class name set aside for testing (held out of training)."""
    return dict(project.labels.annotate(n=Count("images", filter=Q(images__split="test") & LIVE_IMAGES)).values_list("name", "n"))


SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def split_counts(*, images) -> list[tuple[str, int]]:
    """Live images per side of a split the user gave (imported train/ val/ test/ folders, or set
    aside for testing), as ("training", 120) pairs in that order; images without a side count as
    training: each run splits those itself. Empty when no image has a side."""
    rows = images.exclude(split="").order_by().values("split").annotate(n=Count("pk"))
    counts = {row["split"]: row["n"] for row in rows}
    if not counts:
        return []
    counts["train"] = counts.get("train", 0) + images.filter(split="").count()
    return [(SPLIT_NAMES[side], counts[side]) for side in SPLIT_NAMES if counts.get(side)]


def labels_with_previews(*, project: Project) -> list[Label]:
    """Classes with their image count and the newest few images for a preview strip."""
    labels = list(project.labels.annotate(n_images=Count("images", filter=LIVE_IMAGES)))
    for label in labels:
        label.preview = list(label.images.all()[:PREVIEW_THUMBS])
    return labels


def images_by_pk(*, project: Project, pks) -> dict[int, Image]:
    return {image.pk: image for image in project.images.filter(pk__in=pks)}


def deleted_images_in_project(*, project: Project, pks) -> list[Image]:
    """Trashed images of this (already access-checked) project, for an undo."""
    clean = parse_ids(pks)
    return list(Image.all_objects.filter(project=project, deleted_at__isnull=False, pk__in=clean))


def import_get_for_user(*, user, pk, need: str) -> ImportJob:
    return checked_get(ImportJob.objects.select_related("project"), user=user, need=need, pk=pk)

# The page polls every second while an import runs: it shows this many files of each kind at most.
SKIPPED_ROWS_SHOWN = 1000


def import_refused_rows(*, job: ImportJob) -> list:
    """Files the import did not take, with why (not an image, too many pixels, a copy in another class...)."""
    return list(job.report_rows.filter(ok=False, skipped=False, missing=False)[:SKIPPED_ROWS_SHOWN])


def import_missing_rows(*, job: ImportJob) -> list:
    """Rows of the labels file naming no file of the import (not files: listed apart from refusals)."""
    return list(job.report_rows.filter(missing=True)[:SKIPPED_ROWS_SHOWN])


def import_inbox_rows(*, job: ImportJob) -> list:
    """Images the import put into the Inbox, with why where the labels file had a say."""
    return list(job.report_rows.filter(ok=True, inbox=True)[:SKIPPED_ROWS_SHOWN])


def import_noted_rows(*, job: ImportJob) -> list:
    """Files taken with a note: a labels-file row over its class folder, the labels file itself."""
    return list(job.report_rows.filter(ok=True, inbox=False).exclude(reason="")[:SKIPPED_ROWS_SHOWN])


def import_skipped_rows(*, job: ImportJob) -> list:
    """Harmless repeats: the same file was already in its class."""
    return list(job.report_rows.filter(skipped=True)[:SKIPPED_ROWS_SHOWN])


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
    """Most of the project's images are grey (by mode or by pixels): a photo project with a few
    black-and-white photos among its colour ones is not a project of scans."""
    counts = project.images.aggregate(grey=Count("pk", filter=Q(grayscale=True)), total=Count("pk"))
    return counts["total"] > 0 and 2 * counts["grey"] > counts["total"]


def other_labels(*, label: Label) -> list[Label]:
    """The classes an image of `label` can be moved to."""
    return list(label.project.labels.exclude(pk=label.pk))
