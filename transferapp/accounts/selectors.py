"""Reads of API keys: a project's keys, one key of the user's, the key behind a secret."""

from django.shortcuts import get_object_or_404

from transferapp.models import ApiKey, Project


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
