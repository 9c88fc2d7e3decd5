"""Who may do what in a project (#26): the one place that answers it.

A project has one owner (project.owner) and any number of members, each with a role (Membership).
Roles are ordered: a viewer sees everything and predicts; a labeller also uploads, labels and
reviews; an editor also trains, publishes, exports and manages keys and webhooks; the owner also
shares and deletes. Every page, fragment, download and API endpoint asks `require` (through the
selectors that load its object) for the role the action needs:

- a user with no role in the project gets a 404, exactly as for a project that does not exist
  (a stranger learns nothing, not even that the id is taken);
- a user with a role below the one needed gets a 403 (PermissionDenied).
"""
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404

from transferapp.models import Membership, Project, Role

VIEWER, LABELLER, EDITOR, OWNER = Role.VIEWER.value, Role.LABELLER.value, Role.EDITOR.value, Role.OWNER.value
ORDER = [VIEWER, LABELLER, EDITOR, OWNER]
SHARABLE = [VIEWER, LABELLER, EDITOR]  # the roles an owner can give (a project has one owner)


def at_least(role: str | None, need: str) -> bool:
    """Whether `role` includes everything `need` allows (None: no role at all)."""
    return role is not None and ORDER.index(role) >= ORDER.index(need)


def role_of(user, project: Project) -> str | None:
    """The user's role in the project, or None. Cached on the project object for the request."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    cache = project.__dict__.setdefault("_roles", {})
    if user.pk not in cache:
        if project.owner_id == user.pk:
            cache[user.pk] = OWNER
        else:
            cache[user.pk] = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    return cache[user.pk]


def roles_in(user, projects) -> dict[int, str]:
    """{project id: the user's role} for many projects in one query (a list page), not one each."""
    shared = dict(Membership.objects.filter(user=user, project__in=[p.pk for p in projects]).values_list("project_id", "role"))
    return {project.pk: OWNER if project.owner_id == user.pk else shared.get(project.pk) for project in projects}


def visible(user) -> Q:
    """A filter on Project: the projects the user has any role in (for a list, or to load an object
    by id without telling a stranger it exists). Prefix it (`project__`) through `visible_through`."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Q(pk__in=[])
    return Q(owner=user) | Q(memberships__user=user)


def visible_through(user, path: str = "project") -> Q:
    """`visible` for a model that reaches Project through `path` (e.g. "project", "run__project")."""
    return Q(**{f"{path}__in": Project.objects.filter(visible(user)).values("pk")})


def require(user, project: Project, need: str = VIEWER) -> str:
    """The user's role when it is at least `need`; Http404 when they have none, PermissionDenied
    (403) when it is lower. Returns the role, which a page uses to show only what the user may do."""
    role = role_of(user, project)
    if role is None:
        raise Http404("No such project.")
    if not at_least(role, need):
        raise PermissionDenied(f"This needs the {need} role in “{project.name}”; you are a {role}.")
    return role
