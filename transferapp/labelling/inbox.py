"""Giving Inbox images their labels, marking them unsure, and taking a label back (undo)."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from transferapp.library import history
from transferapp.models import Image, InboxRanking, Label, Project


def inbox_count(*, project: Project) -> dict:
    """How many images wait in the Inbox, how many of those are flagged unsure, and how many were
    labelled from it so far."""
    waiting = Image.inbox.filter(project=project)
    return {"waiting": waiting.count(), "unsure": waiting.filter(inbox_unsure=True).count(),
            "labelled": Image.objects.filter(project=project, labelled_at__isnull=False).count()}


def _cards(project: Project) -> dict:
    ranking = InboxRanking.objects.filter(project=project).values_list("cards", flat=True).first()
    return ranking or {}


def inbox_label(*, project: Project, image_ids: list[int], label: Label, user=None, asked: bool = False) -> int:
    """Label these images of `project` with `label` (a class of the same project): Inbox images, and
    images labelled from the Inbox before (a correction: ← back, another key). Images uploaded with
    a label, and those of another project, are left alone. Returns how many were (re)labelled.

    `asked`: ONE image labelled where the labelling page (or the API) asked it. Only then does it
    keep what the quick model suggested and why it was asked: the honest estimate counts random
    picks as asked; a bulk label (more like this, the map) chose its images itself and records
    neither. A correction keeps what was recorded when the image was first labelled."""
    if label.project_id != project.pk:
        raise ValueError("That class belongs to another project.")
    cards, now = _cards(project), timezone.now()
    record = asked and len(image_ids) == 1
    with transaction.atomic():
        images = list(Image.all_objects.select_for_update().filter(
            Q(label__isnull=True) | Q(labelled_at__isnull=False),
            project=project, pk__in=image_ids, deleted_at__isnull=True))
        names = dict(project.labels.values_list("pk", "name"))  # one query, not one per image
        before = [(image.pk, image.original_name, names.get(image.label_id, "")) for image in images]
        for image in images:
            if image.label_id is None:  # from the Inbox: a first label
                card = cards.get(str(image.pk), {}) if record else {}
                image.suggested_label, image.asked_as = card.get("label", "")[:80], card.get("kind", "")[:8]
                image.labelled_at, image.labelled_by = now, user
            image.label, image.inbox_unsure = label, False
        # One UPDATE a batch, not a row: a box on the map can hold thousands of images.
        Image.all_objects.bulk_update(images, ["label", "labelled_at", "labelled_by", "inbox_unsure",
                                               "suggested_label", "asked_as"], batch_size=500)
        history.label_changes(project=project, changes=before, to=label.name, how="labelled")
    return len(images)


def inbox_set_unsure(*, project: Project, image_ids: list[int], unsure: bool = True) -> int:
    """"Unsure": the image stays in the Inbox, flagged, and is asked after every other one."""
    return Image.inbox.filter(project=project, pk__in=image_ids).update(inbox_unsure=unsure)


def inbox_unlabel(*, project: Project, image_ids: list[int]) -> int:
    """Undo: images labelled from the Inbox go back to it (images uploaded with a label never do)."""
    with transaction.atomic():
        taken = Image.objects.filter(project=project, pk__in=image_ids, labelled_at__isnull=False)
        before = list(taken.values_list("pk", "original_name", "label__name"))
        done = taken.update(label=None, labelled_at=None, labelled_by=None, suggested_label="", asked_as="")
        history.label_changes(project=project, changes=before, to="", how="sent back to the Inbox")
    return done
