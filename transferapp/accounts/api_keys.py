"""API keys of a project: created (shown once, stored as SHA-256), revoked, last use recorded."""

import secrets
from datetime import timedelta

from django.utils import timezone

from transferapp.audit import trail
from transferapp.models import ApiKey, Project

# --- API keys ---------------------------------------------------------------------------------

API_KEY_PREFIX = "ta_"


def api_key_create(*, project: Project, name: str = "") -> tuple[ApiKey, str]:
    """A new key for this project: (row, the key itself). The key is shown once and never stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey.objects.create(project=project, name=(name or "").strip()[:80], prefix=key[:ApiKey.PREFIX_LENGTH],
                                key_hash=ApiKey.hash_of(key))
    trail.record(action="key.created", project=project, detail={"key": row.prefix, "name": row.name})
    return row, key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        trail.record(action="key.revoked", project=key.project, detail={"key": key.prefix, "name": key.name})
    return key


def api_keys_revoke_for_user(*, user) -> int:
    """Revoke every key of every project of `user` (their account is being deactivated); how many.

    Revoked for good: reactivating the account later does not bring these keys back, its owner
    makes new ones. (The key lookup also refuses any key of an inactive owner, so an account
    switched off without this, from a shell say, is shut out too; its unrevoked keys would open
    again on reactivation.)"""
    keys = list(ApiKey.objects.select_related("project").filter(project__owner=user, revoked_at__isnull=True))
    for key in keys:  # one by one: each revocation is an entry of its project's audit trail
        api_key_revoke(key=key)
    return len(keys)


def api_key_touch(*, key) -> None:
    """Record "last used", at most once a minute per key or personal token (no write per prediction)."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        type(key).objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
