"""Personal tokens in the API (#26): a token acts as its user, with that user's role."""
import pytest

from tests.factories import member, project_with_images
from transferapp.accounts import tokens
from transferapp.models import AuditEntry

pytestmark = pytest.mark.django_db


def _bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_a_token_opens_the_projects_its_user_has_a_role_in_and_no_other(client, user, other_user):
    project = project_with_images(user, per_class=1)
    mine = project_with_images(other_user, per_class=1, name="Mallory's")
    viewer = member(project, "vic", "viewer")
    _, secret = tokens.token_create(user=viewer, name="laptop")
    assert client.get(f"/api/v1/projects/{project.pk}/versions", **_bearer(secret)).status_code == 200
    assert client.get(f"/api/v1/projects/{mine.pk}/versions", **_bearer(secret)).status_code == 404
    assert client.get(f"/api/v1/projects/{project.pk}/versions", **_bearer(secret + "x")).status_code == 401
    assert AuditEntry.objects.filter(action="token.created", detail__name="laptop").exists()


def test_a_revoked_token_is_refused(client, user):
    project = project_with_images(user, per_class=1)
    row, secret = tokens.token_create(user=user)
    tokens.token_revoke(token=row)
    assert client.get(f"/api/v1/projects/{project.pk}/versions", **_bearer(secret)).status_code == 401
