"""API keys of a project: created (shown once, stored as SHA-256), revoked, last use recorded."""

import secrets
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from transferapp.audit import trail
from transferapp.models import ApiKey, Project

# --- API keys ---------------------------------------------------------------------------------

API_KEY_PREFIX = "ta_"


def api_key_create(*, project: Project, name: str = "", by=None) -> tuple[ApiKey, str]:
    """A new key for this project, made by `by`: (row, the key itself). The key is shown once and
    never stored. Its maker is kept so that their keys go when they lose the editor role."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(project=project, name=(name or "").strip()[:80], prefix=key[:ApiKey.PREFIX_LENGTH],
                                key_hash=ApiKey.hash_of(key), created_by=by)
    trail.record(action="key.created", project=project, detail={"key": row.prefix, "name": row.name})
    return row, key


def api_key_revoke(*, key: ApiKey, why: str = "") -> ApiKey:
    """Revoke the key; `why` (e.g. "member removed") goes into the audit entry when it was not a
    person pressing Revoke."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        detail = {"key": key.prefix, "name": key.name} | ({"why": why} if why else {})
        trail.record(action="key.revoked", project=key.project, detail=detail)
    return key


def api_keys_made_by(*, user, project: Project):
    """The active keys `user` made in `project` (what goes when they lose the editor role there)."""
    return ApiKey.objects.select_related("project").filter(project=project, created_by=user, revoked_at__isnull=True)


def api_keys_made_in(*, project: Project) -> list[int]:
    """The creator's user id of each active key of `project` made by someone (one id per key)."""
    return list(ApiKey.objects.filter(project=project, revoked_at__isnull=True, created_by__isnull=False)
                .values_list("created_by_id", flat=True))


def api_keys_revoke_made_by(*, user, project: Project, why: str) -> int:
    """Revoke the keys `user` made in `project` (they were removed, left, or are no longer an
    editor): a key acts with the project's full editor power, so it must not outlive theirs."""
    keys = list(api_keys_made_by(user=user, project=project))
    for key in keys:
        api_key_revoke(key=key, why=why)
    return len(keys)


def api_keys_revoke_for_user(*, user) -> int:
    """Revoke every key of every project of `user`, and the keys they made in projects shared with
    them (their account is being deactivated); how many.

    Revoked for good: reactivating the account later does not bring these keys back, its owner
    makes new ones. (The key lookup also refuses any key of an inactive owner, so an account
    switched off without this, from a shell say, is shut out too; its unrevoked keys would open
    again on reactivation.)"""
    keys = list(ApiKey.objects.select_related("project")
                .filter(Q(project__owner=user) | Q(created_by=user), revoked_at__isnull=True))
    for key in keys:  # one by one: each revocation is an entry of its project's audit trail
        api_key_revoke(key=key, why="account deactivated")
    return len(keys)


def api_key_touch(*, key) -> None:
    """Record "last used", at most once a minute per key or personal token (no write per prediction)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        type(key).objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
