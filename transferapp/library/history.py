"""What the library's writes put in the audit trail (#26): one entry per user action, never one per
image, so a 50,000-image import or a box on the map is a single line that names a capped list.

The domain functions call these inside their own transaction where they have one, so a refused or
rolled-back change leaves no entry."""
from transferapp.audit import trail
from transferapp.models import Image

LISTED = 50  # images (or file names) an entry names; the count says how many there were in all


def _listed(items: list) -> dict:
    return {"count": len(items), "listed": items[:LISTED], "more": max(0, len(items) - LISTED)}


def label_changes(*, project, changes: list[tuple[int, str, str]], to: str, how: str) -> None:
    """`changes`: (image id, file name, class before: "" for the Inbox) of each image that moved to
    `to` ("" for the Inbox). Images already in `to` are not changes and are left out."""
    moved = [{"image": pk, "file": name, "from": before} for pk, name, before in changes if before != to]
    if moved:
        trail.record(action="label.changed", project=project, detail={"to": to, "how": how, **_listed(moved)})


def label_confirmed(*, image) -> None:
    trail.record(action="label.confirmed", project=image.project,
                 detail={"image": image.pk, "file": image.original_name, "label": _class_of(image)})


def images_event(action: str, *, project, image_ids: list[int]) -> None:
    """images.deleted, images.restored: which images (the first LISTED named, one query), with the
    class each was in."""
    named = Image.all_objects.filter(pk__in=image_ids[:LISTED]).values_list("pk", "original_name", "label__name")
    rows = [{"image": pk, "file": name, "label": label or ""} for pk, name, label in sorted(named)]
    if image_ids:
        trail.record(action=action, project=project,
                     detail={"count": len(image_ids), "listed": rows, "more": max(0, len(image_ids) - LISTED)})


def uploads(*, project, to: str, outcomes: list) -> None:
    """One upload batch (a drop of files, an API call): how many were added, skipped, refused, and
    the names of the added ones. A batch that added nothing changed nothing and is not recorded."""
    added = [o for o in outcomes if o.image is not None]
    if added:
        trail.record(action="images.uploaded", project=project, detail={
            "to": to, "added": len(added), "skipped": sum(o.skipped for o in outcomes),
            "refused": sum(o.image is None and not o.skipped for o in outcomes),
            **_listed([{"image": o.image.pk, "file": o.name} for o in outcomes if o.image is not None])})


def imported(*, project, summary: dict) -> None:
    """One import (a zip, a folder): its counts and the names of the files it added."""
    names = [row["name"] for row in summary.get("report", []) if row.get("ok")]
    trail.record(action="images.imported", project=project, detail={
        "added": summary.get("accepted", 0), "skipped": summary.get("skipped", 0),
        "refused": summary.get("refused", 0), "inbox": summary.get("inbox", 0),
        "new_classes": summary.get("created_classes", [])[:LISTED], "files": names[:LISTED],
        "more": max(0, len(names) - LISTED)})


def _class_of(image) -> str:
    return image.label.name if image.label_id else ""
