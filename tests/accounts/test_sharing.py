"""Sharing a project (#26): the domain rules, their audit entries, and the operators' command."""
import io

import pytest
from django.core.management import CommandError, call_command

from tests.factories import project_with_images
from transferapp.accounts import roles, sharing
from transferapp.audit import trail
from transferapp.models import AuditEntry, Membership, Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(user):
    return project_with_images(user, per_class=1)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", email="Bob@Example.org", password="bob-long-password-1")


def test_sharing_by_username_or_email_gives_the_role_and_is_audited(project, user, bob):
    with trail.acting_as(trail.Actor.of_user(user)):
        member = sharing.share(project=project, who="bob@example.org", role=roles.LABELLER, by=user)
    assert member.user == bob and roles.role_of(bob, project) == roles.LABELLER
    entry = AuditEntry.objects.get(action="sharing.added")
    assert entry.project_ref == project.pk and entry.actor == "alice"
    assert entry.detail == {"user": "bob", "role": "labeller"}


def test_changing_and_removing_a_role_are_audited_with_before_and_after(project, user, bob):
    member = sharing.share(project=project, who="bob", role=roles.VIEWER, by=user)
    sharing.change_role(member=member, role=roles.EDITOR)
    assert Membership.objects.get(pk=member.pk).role == roles.EDITOR
    sharing.unshare(member=member)
    assert roles.role_of(bob, project) is None
    actions = list(AuditEntry.objects.filter(action__startswith="sharing.").order_by("pk").values_list("action", "detail"))
    assert actions[1:] == [("sharing.changed", {"user": "bob", "from": "viewer", "to": "editor"}),
                           ("sharing.removed", {"user": "bob", "role": "editor", "left": False})]
    assert trail.verify().ok


def test_unknown_and_inactive_accounts_get_the_same_answer(project, user, bob, django_user_model):
    django_user_model.objects.create_user("gone", email="gone@example.org", is_active=False)
    answers = set()
    for who in ("nobody@example.org", "gone@example.org", "gone", "", "nobody"):
        with pytest.raises(sharing.SharingRefused) as refused:
            sharing.share(project=project, who=who, role=roles.VIEWER, by=user)
        answers.add(str(refused.value))
    assert answers == {sharing.NO_SUCH_USER}
    assert not AuditEntry.objects.filter(action__startswith="sharing.").exists() and not Membership.objects.exists()


def test_the_owner_a_second_share_and_the_owner_role_are_refused(project, user, bob):
    with pytest.raises(sharing.SharingRefused, match="owns this project"):
        sharing.share(project=project, who="alice", role=roles.VIEWER, by=user)
    with pytest.raises(sharing.SharingRefused, match="one owner"):
        sharing.share(project=project, who="bob", role=roles.OWNER, by=user)
    sharing.share(project=project, who="bob", role=roles.VIEWER, by=user)
    with pytest.raises(sharing.SharingRefused, match="already a member"):
        sharing.share(project=project, who="bob", role=roles.EDITOR, by=user)
    assert Membership.objects.get().role == roles.VIEWER


def test_a_member_can_leave_but_the_owner_cannot(project, user, bob):
    sharing.share(project=project, who="bob", role=roles.VIEWER, by=user)
    with pytest.raises(sharing.SharingRefused, match="You own this project"):
        sharing.leave(project=project, user=user)
    sharing.leave(project=project, user=bob)
    assert roles.role_of(bob, project) is None
    assert AuditEntry.objects.filter(action="sharing.removed").get().detail["left"] is True


def test_the_command_shares_then_changes_the_role_as_the_operator(project, user, bob):
    out = io.StringIO()
    call_command("share_project", "--user", "alice", "--project", project.name, "--with", "bob", "--role", "viewer", stdout=out)
    assert "bob is viewer" in out.getvalue() and roles.role_of(bob, project) == roles.VIEWER
    call_command("share_project", "--user", "alice", "--project", project.name, "--with", "bob@example.org",
                 "--role", "editor", stdout=io.StringIO())
    assert roles.role_of(bob, Project.objects.get(pk=project.pk)) == roles.EDITOR  # a fresh row: role_of caches per object
    entries = list(AuditEntry.objects.filter(action__startswith="sharing.").order_by("pk"))
    assert [e.action for e in entries] == ["sharing.added", "sharing.changed"]
    assert all(e.actor.startswith("operator:") for e in entries)


def test_the_command_refuses_an_unknown_user_and_someone_elses_project(project, user, bob):
    with pytest.raises(CommandError, match="No active account"):
        call_command("share_project", "--user", "alice", "--project", project.name, "--with", "carol", "--role", "viewer")
    with pytest.raises(CommandError, match="has no project"):
        call_command("share_project", "--user", "bob", "--project", project.name, "--with", "alice", "--role", "viewer")
    assert not Membership.objects.exists()
