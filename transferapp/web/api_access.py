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
from transferapp.models import PersonalToken, Prediction, Project


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


def caller_bucket(caller) -> str:
    """The caller's allowance bucket: one per project key (its id, as before #26), one per token."""
    return f"token:{caller.pk}" if isinstance(caller, PersonalToken) else str(caller.pk)


def caller_projects(request) -> list[tuple[Project, str]]:
    """(project, role) for every project the caller may open: a key's own project, as an editor;
    every project a token's user has a role in, with that role."""
    caller = request.auth
    if not isinstance(caller, PersonalToken):
        return [(caller.project, PROJECT_KEY_ROLE)]
    projects = list(Project.objects.filter(roles.visible(caller.user)).distinct().order_by("pk"))
    role_of = roles.roles_in(caller.user, projects)
    return [(project, role_of[project.pk]) for project in projects]


def _project_for_key(request, project_id: int, *, need: str, hits=lambda: 1):
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
    else:
        if caller.project_id != project_id:
            raise Http404("No such project for this key.")
        if not roles.at_least(PROJECT_KEY_ROLE, need):
            raise PermissionDenied("A project key cannot do this: use the owner's account.")
        project = caller.project
    charge(caller, hits)
    return project


def charge(caller, hits=lambda: 1) -> None:
    """Count `hits` against the caller's per-minute allowance; 429 once it is spent."""
    bucket, limit = caller_bucket(caller), _api_limit()
    if limit.exceeded(bucket):
        raise HttpError(429, f"Too many requests: {limit.limit} a minute per key at most. Wait a minute, then try again.")
    limit.hit(bucket, max(hits(), 1))


def prediction_project_id(request, prediction_id: int) -> int:
    """The project of a logged prediction the caller names, so that its role there can be checked:
    a key's own project (another project's prediction is then simply not found in it); for a token,
    the prediction's project, or a 404 (counted: probing ids is a hit too)."""
    caller = request.auth
    if not isinstance(caller, PersonalToken):
        return caller.project_id
    project_id = Prediction.objects.filter(pk=prediction_id).values_list("project_id", flat=True).first()
    if project_id is None:
        charge(caller)
        raise Http404("No such prediction.")
    return project_id
