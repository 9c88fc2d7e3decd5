"""Who calls the REST API and what they may open (#26): a project key, or a personal token that acts
as its user with that user's role in each project; and the per-caller allowance."""
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404
from ninja.errors import HttpError
from ninja.security import HttpBearer

from transferapp.accounts import api_keys, roles, throttle, tokens
from transferapp.accounts import selectors as accounts_selectors
from transferapp.audit import trail
from transferapp.models import PersonalToken, Project


class ProjectKey(HttpBearer):
    """A project key (opens its own project, as an editor of it) or a personal token (#26: acts as
    its user, with that user's role in each project). Either becomes the audit trail's actor."""

    def authenticate(self, request, token):
        secret = token.strip()
        if tokens.is_token(secret):
            row = tokens.token_for_secret(secret=secret)
            if row is not None:
                api_keys.api_key_touch(key=row)
                trail.set_actor(trail.Actor.of_user(row.user, via=f"token {row.prefix}…"))
            return row
        key = accounts_selectors.api_key_for_secret(key=secret)
        if key is not None:
            api_keys.api_key_touch(key=key)
            trail.set_actor(trail.Actor(f"key {key.prefix}…" + (f" ({key.name})" if key.name else "")))
        return key


def _api_limit() -> throttle.Limit:
    return throttle.Limit("api", settings.API_RATE_PER_MIN, 60)


# What a project key may do in its own project: everything but sharing and deleting (#26).
PROJECT_KEY_ROLE = roles.EDITOR


def caller_user(request):
    """The user a personal token acts as; None for a project key (it is no one's)."""
    return request.auth.user if isinstance(request.auth, PersonalToken) else None


def _project_for_key(request, project_id: int, hits=lambda: 1, need: str = roles.VIEWER):
    """The project, when the caller may do what `need` allows in it: a key opens its own project
    only (404 for any other), a token the projects its user has a role in (404 for others, 403
    when the role is too low). Counted against the caller's allowance (`hits`: how many, asked
    only once the project is known to be the caller's)."""
    caller = request.auth
    if isinstance(caller, PersonalToken):
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            raise Http404("No such project.")
        roles.require(caller.user, project, need)
        bucket = f"token:{caller.pk}"
    else:
        if caller.project_id != project_id:
            raise Http404("No such project for this key.")
        if not roles.at_least(PROJECT_KEY_ROLE, need):
            raise PermissionDenied("A project key cannot do this: use the owner's account.")
        project, bucket = caller.project, str(caller.pk)
    limit = _api_limit()
    if limit.exceeded(bucket):
        raise HttpError(429, f"Too many requests: {limit.limit} a minute per key at most. Wait a minute, then try again.")
    limit.hit(bucket, max(hits(), 1))
    return project
