"""Giving Inbox images their labels, marking them unsure, and taking a label back (undo)."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

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


def inbox_label(*, project: Project, image_ids: list[int], label: Label, user=None) -> int:
    """Label these Inbox images of `project` with `label` (a class of the same project); images that
    are not (or no longer) in this project's Inbox are left alone. Returns how many were labelled.
    Each keeps what the quick model suggested and why it was asked, for the honest estimate."""
    if label.project_id != project.pk:
        raise ValueError("That class belongs to another project.")
    cards, now = _cards(project), timezone.now()
    with transaction.atomic():
        images = list(Image.inbox.select_for_update().filter(project=project, pk__in=image_ids))
        for image in images:
            card = cards.get(str(image.pk), {})
            image.label, image.labelled_at, image.labelled_by, image.inbox_unsure = label, now, user, False
            image.suggested_label, image.asked_as = card.get("label", "")[:80], card.get("kind", "")[:8]
        # One UPDATE a batch, not a row: a box on the map can hold thousands of images.
        Image.all_objects.bulk_update(images, ["label", "labelled_at", "labelled_by", "inbox_unsure",
                                               "suggested_label", "asked_as"], batch_size=500)
    return len(images)


def inbox_set_unsure(*, project: Project, image_ids: list[int], unsure: bool = True) -> int:
    """"Unsure": the image stays in the Inbox, flagged, and is asked after every other one."""
    return Image.inbox.filter(project=project, pk__in=image_ids).update(inbox_unsure=unsure)


def inbox_unlabel(*, project: Project, image_ids: list[int]) -> int:
    """Undo: images labelled from the Inbox go back to it (images uploaded with a label never do)."""
    return Image.objects.filter(project=project, pk__in=image_ids, labelled_at__isnull=False).update(
        label=None, labelled_at=None, labelled_by=None, suggested_label="", asked_as="")
