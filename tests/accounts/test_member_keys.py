"""An editor's project API keys go with their role (#26 review): a key acts with the project's full
editor power, so a member who is removed, leaves, drops below editor or is deactivated must not
keep a key they made."""
import re

import pytest
from django.core.cache import cache
from django.urls import reverse

from tests.factories import member, project_with_images
from transferapp.accounts import api_keys, roles, sharing
from transferapp.models import ApiKey, AuditEntry, Membership

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


@pytest.fixture
def project(user):
    return project_with_images(user, per_class=1, name="Shared colours")


def _editor_with_key(client, project):
    """An editor who made a key on the project page; (their membership, the key)."""
    ed = member(project, "ed", roles.EDITOR)
    client.force_login(ed)
    page = client.post(reverse("api_key_create", args=[project.pk]), {"name": "ed's script"}).content.decode()
    secret = re.search(r"ta_[A-Za-z0-9_-]{40,}", page).group(0)
    client.logout()
    return Membership.objects.get(project=project, user=ed), secret


def _api_status(client, project, secret):
    return client.get(f"/api/v1/projects/{project.pk}/versions", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code


def _revocations():
    return [entry.detail.get("why") for entry in AuditEntry.objects.filter(action="key.revoked").order_by("pk")]


def test_a_removed_editors_key_is_refused(client, project):
    membership, secret = _editor_with_key(client, project)
    assert ApiKey.objects.get().created_by == membership.user
    assert _api_status(client, project, secret) == 200
    sharing.unshare(member=membership)
    assert _api_status(client, project, secret) == 401
    assert _revocations() == ["member removed"]


def test_leaving_and_a_downgrade_below_editor_revoke_the_members_keys(client, project, user):
    membership, secret = _editor_with_key(client, project)
    _, owners = api_keys.api_key_create(project=project, by=user)
    sharing.change_role(member=membership, role=roles.LABELLER)
    assert _api_status(client, project, secret) == 401
    assert _api_status(client, project, owners) == 200  # the owner's key is not the member's
    assert _revocations() == ["member's role changed to labeller"]
    sharing.change_role(member=membership, role=roles.EDITOR)
    _, again = api_keys.api_key_create(project=project, by=membership.user)
    sharing.leave(project=project, user=membership.user)
    assert _api_status(client, project, again) == 401
    assert _revocations()[-1] == "member left"


def test_a_change_between_editor_roles_keeps_keys(client, project):
    membership, _ = _editor_with_key(client, project)
    sharing.change_role(member=membership, role=roles.EDITOR)
    sharing.change_role(member=membership, role=roles.VIEWER)
    assert _revocations() == ["member's role changed to viewer"]


def test_deactivating_a_member_revokes_the_keys_they_made_in_shared_projects(client, project):
    membership, secret = _editor_with_key(client, project)
    assert api_keys.api_keys_revoke_for_user(user=membership.user) == 1
    membership.user.is_active = True  # reactivated later: the key stays revoked
    assert _api_status(client, project, secret) == 401
    assert _revocations() == ["account deactivated"]


def test_the_key_list_names_its_maker_and_the_sharing_page_warns_of_the_keys(client, alice, project):
    _editor_with_key(client, project)
    api_keys.api_key_create(project=project)  # an older key: no maker recorded
    alice.force_login(project.owner)
    page = alice.get(project.get_absolute_url()).content.decode()
    assert "<td>ed</td>" in page and "not recorded" in page
    sharing_page = alice.get(reverse("project_sharing", args=[project.pk])).content.decode()
    assert "Their 1 API key of this project will be revoked." in sharing_page
    assert "A role below editor revokes the 1 API key ed made in this project." in sharing_page
