"""Per-user quotas: storage, images, projects, and trainings and imports queued or running at once.

The server's defaults come from QUOTA_* settings; a UserQuota row (edited in the admin, on the
user's page) overrides any of them for one user. 0 means no limit. Each check returns the
sentence to show the user, or "" when the action is allowed; the domain write turns it into a refusal (library/errors.py).

A check and the row it allows are made under `lock_owner` (the domain writes), so two requests at the
same moment cannot both pass: the second one waits for the first one's row and then counts it.
"""
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Sum

from transferapp.audit import trail
from transferapp.models import Image, ImportJob, Project, TrainingRun, UserQuota

MB = 1_000_000  # quotas are in decimal units, as disks are sold and as the project list shows them
ASK = "Ask your administrator if you need more."
ASK_OWNER = "The owner can delete some images, or ask the administrator for more."


def _by_owner(owner) -> bool:
    """Whether the person acting (the audit trail's actor: the request's user) is the quota's owner.
    A member of a shared project uses the owner's quota, so "your quota" would be wrong for them;
    a key, the worker or an operator is told about "this project's owner" too."""
    return trail.current_actor().user_id == _user_id(owner)


@dataclass(frozen=True)
class Quota:
    storage_bytes: int
    images: int
    projects: int
    runs: int
    imports: int


def quota_for(user) -> Quota:
    override = UserQuota.objects.filter(user_id=_user_id(user)).first()

    def pick(field: str, default: int) -> int:
        value = getattr(override, field, None)
        return default if value is None else value

    return Quota(
        storage_bytes=pick("storage_mb", settings.QUOTA_STORAGE_MB) * MB,
        images=pick("max_images", settings.QUOTA_IMAGES),
        projects=pick("max_projects", settings.QUOTA_PROJECTS),
        runs=pick("max_runs", settings.QUOTA_RUNS),
        imports=pick("max_imports", settings.QUOTA_IMPORTS),
    )


def lock_owner(owner) -> None:
    """Inside transaction.atomic(): hold the owner's row until the transaction ends, so that one
    check-and-create at a time runs per user. PostgreSQL locks the row (SELECT ... FOR UPDATE);
    SQLite has no row locks, but its transactions start as writers here (settings: IMMEDIATE), which
    already makes them one at a time."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_owner() holds the lock only inside transaction.atomic()")
    get_user_model().objects.select_for_update().filter(pk=_user_id(owner)).exists()


def _user_id(user) -> int:
    return user if isinstance(user, int) else user.pk


def usage(owner) -> tuple[int, int]:
    """(images, bytes) the owner's live images hold, the Inbox's included, in one query (it runs for
    every stored file)."""
    live = Image.all_objects.filter(deleted_at__isnull=True)  # Image.objects leaves the Inbox out
    row = live.filter(project__owner_id=_user_id(owner)).aggregate(n=Count("pk"), total=Sum("size_bytes"))
    return row["n"], row["total"] or 0


def image_refusal(*, owner, size: int) -> str:
    """Why one more image of `size` bytes may not be stored for this owner ("" when it may)."""
    quota = quota_for(owner)
    if not (quota.images or quota.storage_bytes):
        return ""
    images, used = usage(owner)
    if quota.images and images >= quota.images:
        return _used_up(owner, "image", _plural(quota.images, "image"))
    if quota.storage_bytes and used + size > quota.storage_bytes:
        return _used_up(owner, "storage", f"{format_bytes(used)} of {format_bytes(quota.storage_bytes)}")
    return ""


def _used_up(owner, what: str, amount: str) -> str:
    if _by_owner(owner):
        return f"Your {what} quota is used up ({amount}). Delete some images first. {ASK}"
    return f"This project's owner has used up their {what} quota ({amount}). {ASK_OWNER}"


def project_refusal(*, owner) -> str:
    limit = quota_for(owner).projects
    if limit and Project.objects.filter(owner_id=_user_id(owner)).count() >= limit:
        return f"Your project quota is used up ({_plural(limit, 'project')}). Delete a project first. {ASK}"
    return ""


def run_refusal(*, owner) -> str:
    return _at_once_refusal(TrainingRun, owner, quota_for(owner).runs, "training",
                            "Wait for one to finish or cancel one, then start this one.")


def import_refusal(*, owner) -> str:
    return _at_once_refusal(ImportJob, owner, quota_for(owner).imports, "import", "Wait for one to finish.")


def _at_once_refusal(model, owner, limit: int, noun: str, advice: str) -> str:
    """Trainings and imports share one rule: at most `limit` of them queued or running per user."""
    active = model.objects.filter(project__owner_id=_user_id(owner), status__in=[model.Status.QUEUED, model.Status.RUNNING])
    if limit and active.count() >= limit:
        if _by_owner(owner):
            return f"You already have {_plural(limit, noun)} queued or running, your limit. {advice}"
        return (f"This project's owner already has {_plural(limit, noun)} queued or running, their limit "
                f"(it counts all their projects). {advice}")
    return ""


def usage_text(user) -> str:
    """For the project list: "2.1 GB of 10 GB · 120 of 50,000 images" (limits only where set)."""
    quota = quota_for(user)
    n_images, used = usage(user)
    storage = format_bytes(used) + (f" of {format_bytes(quota.storage_bytes)}" if quota.storage_bytes else "")
    images = f"{n_images:,}" + (f" of {quota.images:,}" if quota.images else "") + " images"
    return f"Storage used: {storage} · {images}"


def format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
