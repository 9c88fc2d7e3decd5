"""Reads of API keys: a project's keys, one key of the user's, the key behind a secret; and the
one way a page loads a row of a project by id: found among the projects the user has a role in
(else 404, as for a row that does not exist), then the role the action needs (else 403)."""

from django.shortcuts import get_object_or_404

from transferapp.accounts import roles
from transferapp.models import ApiKey, Project, Webhook


class Can:
    """What the user's role allows, for templates to show only that (`project.can.label`). Hiding a
    button is a courtesy: the view's own check (`need`) is the guard."""

    def __init__(self, role: str | None):
        self.role = role
        self.view = roles.at_least(role, roles.VIEWER)
        self.label = roles.at_least(role, roles.LABELLER)
        self.edit = roles.at_least(role, roles.EDITOR)
        self.own = roles.at_least(role, roles.OWNER)


def checked_get(queryset, *, user, need: str, path: str = "project", **lookup):
    """The row of `queryset` matching `lookup` in a project the user can see, when their role there
    is at least `need`. `path` leads from the row to its Project ("pk" for a Project itself). The
    project then carries `can`, what the user may do in it, for the page."""
    row = get_object_or_404(queryset.filter(roles.visible_through(user, path)), **lookup)
    project = row if path == "pk" else getattr(row, path)
    project.can = Can(roles.require(user, project, need))
    return row


def api_keys_for_project(*, project: Project):
    return project.api_keys.select_related("created_by")


def api_key_get_for_user(*, user, pk, need: str) -> ApiKey:
    return checked_get(ApiKey.objects.select_related("project"), user=user, need=need, pk=pk)


def webhook_get_for_user(*, user, pk, need: str) -> Webhook:
    """A webhook of a project the user has `need` in (here, not in webhooks/: that package sits
    below accounts and cannot ask for a role)."""
    return checked_get(Webhook.objects.select_related("project"), user=user, need=need, pk=pk)


def api_key_for_secret(*, key: str) -> ApiKey | None:
    """The active key with this secret, or None (unknown, malformed, revoked, or its owner's account
    deactivated: is_active=False shuts out every key of theirs, however the account was switched off;
    so does its maker's, for a key a member made)."""
    row = (ApiKey.objects.select_related("project")
           .filter(prefix=key[:ApiKey.PREFIX_LENGTH], key_hash=ApiKey.hash_of(key), project__owner__is_active=True)
           .exclude(created_by__is_active=False).first())
    return row if row is not None and row.is_active else None
