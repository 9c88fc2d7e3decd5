"""Sharing a project (#26): the owner adds an existing user with a role, changes it, removes them;
a member can leave. Each change is an audit entry ("sharing.added", "sharing.changed",
"sharing.removed"). A member who goes, or drops below editor, takes the project's API keys they made
with them (revoked, each a "key.revoked" entry saying why).

Whom to add is typed (a username or an e-mail address). An unknown name and an inactive account get
the same answer, so the form tells an owner no more than a successful share would: that an active
account answers to that name. It never says "that e-mail exists but is switched off"."""
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from transferapp.accounts import api_keys, roles
from transferapp.audit import trail
from transferapp.models import Membership, Project

NO_SUCH_USER = ("No active account has that username or e-mail address. The person has to sign up (or be "
                "given an account) before you can share with them.")


class SharingRefused(Exception):
    """A sharing change that may not be made; the message is for the user, as is."""


def find_user(who: str):
    """The active user whose username is `who`, else the one active user with that e-mail address."""
    who = (who or "").strip()
    users = get_user_model().objects.filter(is_active=True)
    if not who:
        return None
    found = users.filter(username=who).first()
    if found is None and "@" in who:
        matches = list(users.filter(Q(email__iexact=who))[:2])
        found = matches[0] if len(matches) == 1 else None  # two accounts, one address: not a guess
    return found


def _check_role(role: str) -> str:
    if role not in roles.SHARABLE:
        raise SharingRefused(f"Choose a role: {', '.join(roles.SHARABLE)}. A project has one owner.")
    return role


def share(*, project: Project, who: str, role: str, by=None) -> Membership:
    """Give the user named `who` (username or e-mail) `role` in the project."""
    _check_role(role)
    user = find_user(who)
    if user is None:
        raise SharingRefused(NO_SUCH_USER)
    if user.pk == project.owner_id:
        raise SharingRefused(f"{user.get_username()} owns this project already.")
    try:
        with transaction.atomic():
            member = Membership.objects.create(project=project, user=user, role=role, added_by=by)
    except IntegrityError:
        raise SharingRefused(f"{user.get_username()} is already a member; change their role in the list instead.") from None
    trail.record(action="sharing.added", project=project, detail={"user": user.get_username(), "role": role})
    return member


def change_role(*, member: Membership, role: str) -> Membership:
    """Give the member another role; below editor, the API keys they made here are revoked (a key
    acts with the editor's power, which they no longer have)."""
    _check_role(role)
    before = member.role
    if before != role:
        with transaction.atomic():
            member.role = role
            member.save(update_fields=["role"])
            trail.record(action="sharing.changed", project=member.project,
                         detail={"user": member.user.get_username(), "from": before, "to": role})
            if not roles.at_least(role, roles.EDITOR):
                api_keys.api_keys_revoke_made_by(user=member.user, project=member.project,
                                                 why=f"member's role changed to {role}")
    return member


def unshare(*, member: Membership, left: bool = False) -> None:
    """Remove a member (the owner removing them, or with `left`, the member leaving), and revoke
    the API keys they made in the project."""
    project, user, role = member.project, member.user, member.role
    with transaction.atomic():
        member.delete()
        trail.record(action="sharing.removed", project=project,
                     detail={"user": user.get_username(), "role": role, "left": left})
        api_keys.api_keys_revoke_made_by(user=user, project=project, why="member left" if left else "member removed")


def keys_at_stake(*, project: Project) -> dict[int, int]:
    """For the owner's sharing page: member's user id -> how many active keys they made here (the
    keys that removing them, or a role below editor, revokes)."""
    counts = {}
    for user_id in api_keys.api_keys_made_in(project=project):
        counts[user_id] = counts.get(user_id, 0) + 1
    return counts


def leave(*, project: Project, user) -> None:
    """The user leaves a project shared with them; the owner cannot (they delete it or stay)."""
    if user.pk == project.owner_id:
        raise SharingRefused("You own this project: you cannot leave it. Delete it instead, if it is no longer needed.")
    member = Membership.objects.filter(project=project, user=user).select_related("project", "user").first()
    if member is None:
        raise SharingRefused("You are not a member of this project.")
    unshare(member=member, left=True)


def members(*, project: Project) -> list[Membership]:
    return list(project.memberships.select_related("user", "added_by").order_by("user__username"))
