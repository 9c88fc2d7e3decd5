"""The REST API under roles (#26): a personal token acts as its user, with that user's role in each
project; a project key acts as an editor of its own project only. Every route of web/api.py and
web/api_inbox.py is in ROUTES below, with the role it needs: a missing one fails the test."""
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from tests.conftest import image_bytes
from tests.factories import inbox_with_images, member, project_with_images, upload
from transferapp import urls  # noqa: F401 (registers every module's routes on `api`, as the server does)
from transferapp.accounts import api_keys, tokens
from transferapp.models import AuditEntry, Image, Membership, PersonalToken, Prediction
from transferapp.serving import prediction_log
from transferapp.training import versions as training_versions
from transferapp.web.api import api

pytestmark = pytest.mark.django_db

API = "/api/v1"
ROLES = ["stranger", "viewer", "labeller", "editor", "owner"]
RANK = {role: i for i, role in enumerate(ROLES)}


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


def _bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@dataclass
class World:
    """One project with a version (whose model files are gone: predicting answers 409 once access
    is granted), a logged prediction, Inbox images, and a token for each role."""
    project: object
    run: object
    prediction: object
    inbox: list
    secrets: dict


@pytest.fixture
def world(user, other_user, queue):
    project = project_with_images(user, per_class=5)
    run = project.runs.create(base_model="efficientnet_lite0", status="succeeded", artifact_dir="/nonexistent/run")
    training_versions.run_assign_version(run_id=run.pk)
    run.refresh_from_db()
    prediction = Prediction.objects.create(project=project, run=run, version=run.version, source="api", created_at=timezone.now(),
                                           sha256="c" * 64, top_label="red", probability=0.8, prediction_set=["red"])
    people = {"stranger": other_user, "owner": user}
    people.update({role: member(project, f"{role}-person", role) for role in ("viewer", "labeller", "editor")})
    secrets = {role: tokens.token_create(user=person, name=role)[1] for role, person in people.items()}
    return World(project, run, prediction, inbox_with_images(project, per_color=3), secrets)


def _json(client, path, body, headers):
    return client.post(path, data=body, content_type="application/json", **headers)


def _files(client, path, headers):
    return client.post(path, data={"files": [upload("new.png", image_bytes("green", shape_seed=7))]}, **headers)


def _inbox_image(w):
    """An Inbox image not labelled yet (a caller before labelled one; the world has one for each)."""
    return Image.inbox.filter(project=w.project).first()


def _no_training_under_way(w, headers):
    """The runs a caller before started are gone: each caller's training may start."""
    w.project.runs.exclude(pk=w.run.pk).delete()
    return headers


# (method, path as ninja names it) -> (the role it needs, the status once allowed, the call)
ROUTES = {
    ("GET", "/projects/{project_id}/versions"): ("viewer", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/versions", **h)),
    ("GET", "/projects/{project_id}/versions/{version}"): ("viewer", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/versions/{w.run.version}", **h)),
    ("GET", "/projects/{project_id}/runs/{run_id}"): ("viewer", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/runs/{w.run.pk}", **h)),
    ("GET", "/projects/{project_id}/monitoring"): ("viewer", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/monitoring", **h)),
    ("GET", "/projects/{project_id}/predictions"): ("viewer", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/predictions", **h)),
    ("POST", "/projects/{project_id}/predict"): ("viewer", 409, lambda c, w, h: c.post(
        f"{API}/projects/{w.project.pk}/predict", data=image_bytes("red"), content_type="image/png", **h)),
    ("POST", "/projects/{project_id}/versions/{version}/predict"): ("viewer", 409, lambda c, w, h: c.post(
        f"{API}/projects/{w.project.pk}/versions/{w.run.version}/predict", data=image_bytes("red"), content_type="image/png", **h)),
    ("POST", "/predictions/{prediction_id}/feedback"): ("labeller", 200, lambda c, w, h: _json(
        c, f"{API}/predictions/{w.prediction.pk}/feedback", {"label": "blue"}, h)),
    ("POST", "/projects/{project_id}/classes/{name}/images"): ("labeller", 200, lambda c, w, h: _files(
        c, f"{API}/projects/{w.project.pk}/classes/red/images", h)),
    ("POST", "/projects/{project_id}/inbox"): ("labeller", 200, lambda c, w, h: _files(c, f"{API}/projects/{w.project.pk}/inbox", h)),
    ("GET", "/projects/{project_id}/inbox/next"): ("labeller", 200, lambda c, w, h: c.get(f"{API}/projects/{w.project.pk}/inbox/next", **h)),
    ("POST", "/projects/{project_id}/images/{image_id}/label"): ("labeller", 200, lambda c, w, h: _json(
        c, f"{API}/projects/{w.project.pk}/images/{_inbox_image(w).pk}/label", {"label": "red"}, h)),
    ("POST", "/projects/{project_id}/train"): ("editor", 202, lambda c, w, h: _json(
        c, f"{API}/projects/{w.project.pk}/train", {"preset": "fast"}, _no_training_under_way(w, h))),
}
NOT_PROJECT_SCOPED = {("GET", "/health"), ("GET", "/projects")}  # tested on their own below


def _api_routes() -> set[tuple[str, str]]:
    """Every (method, path) that web/api.py and web/api_inbox.py register on the API."""
    found = set()
    for _, router in api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                if operation.view_func.__module__ in ("transferapp.web.api", "transferapp.web.api_inbox"):
                    found.update((method, path) for method in operation.methods)
    return found


def test_every_api_route_has_its_role_in_the_table():
    missing = _api_routes() - set(ROUTES) - NOT_PROJECT_SCOPED
    assert not missing, f"Add these routes to ROUTES with the role they need: {sorted(missing)}"
    assert not set(ROUTES) - _api_routes(), "ROUTES names a route the API no longer has"


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_role_and_each_kind_of_key_gets_the_right_status_on_each_route(client, world, other_user, route):
    """Each call makes what it changes afresh, so one project serves every caller in turn."""
    need, allowed, call = ROUTES[route]
    for role in ROLES:
        response = call(client, world, _bearer(world.secrets[role]))
        expected = 404 if role == "stranger" else allowed if RANK[role] >= RANK[need] else 403
        assert (role, response.status_code) == (role, expected), response.content
        if expected in (403, 404):
            assert "error" in response.json()
        if role == "stranger":  # never told the project exists
            assert world.project.name not in response.content.decode()
    _, own_key = api_keys.api_key_create(project=world.project, name="lims")  # an editor of its own project
    assert call(client, world, _bearer(own_key)).status_code == allowed
    _, other_key = api_keys.api_key_create(project=project_with_images(other_user, per_class=1, name="Elsewhere"))
    assert call(client, world, _bearer(other_key)).status_code == 404


def test_the_project_list_shows_each_project_with_the_callers_role(client, user, other_user):
    shared = project_with_images(other_user, per_class=1, name="Shared")
    own = project_with_images(user, per_class=1, name="Own")
    project_with_images(other_user, per_class=1, name="Private")
    Membership.objects.create(project=shared, user=user, role="labeller", added_by=other_user)
    _, secret = tokens.token_create(user=user)
    listed = client.get(f"{API}/projects", **_bearer(secret)).json()
    assert [(p["name"], p["role"]) for p in listed] == [("Shared", "labeller"), ("Own", "owner")]
    _, key = api_keys.api_key_create(project=own)
    assert [(p["name"], p["role"]) for p in client.get(f"{API}/projects", **_bearer(key)).json()] == [("Own", "editor")]


def test_feedback_on_an_unknown_prediction_is_a_404_for_a_token(client, world):
    response = _json(client, f"{API}/predictions/{world.prediction.pk + 999}/feedback", {"label": "red"},
                     _bearer(world.secrets["labeller"]))
    assert response.status_code == 404


def test_token_feedback_records_its_user_as_the_reviewer(client, world):
    assert ROUTES[("POST", "/predictions/{prediction_id}/feedback")][2](
        client, world, _bearer(world.secrets["labeller"])).status_code == 200
    world.prediction.refresh_from_db()
    assert world.prediction.reviewed_by.username == "labeller-person" and world.prediction.review_source == "api"


def test_the_prediction_log_names_a_tokens_user_and_a_keys_name(user):
    row, _ = tokens.token_create(user=user, name="laptop")
    assert prediction_log.api(row, user=user).name == f"{user.username} (laptop)"
    key, _ = api_keys.api_key_create(project=project_with_images(user, per_class=1), name="lims")
    assert prediction_log.api(key).name == "lims"


def test_a_tokens_requests_count_against_its_own_allowance(client, world, settings):
    settings.API_RATE_PER_MIN = 2
    path = f"{API}/projects/{world.project.pk}/versions"
    statuses = [client.get(path, **_bearer(world.secrets["viewer"])).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get(path, **_bearer(world.secrets["owner"])).status_code == 200  # another token, another bucket


def test_a_token_of_a_deactivated_user_is_refused(client, world):
    viewer = PersonalToken.objects.get(name="viewer").user
    viewer.is_active = False
    viewer.save()
    response = client.get(f"{API}/projects/{world.project.pk}/versions", **_bearer(world.secrets["viewer"]))
    assert response.status_code == 401 and "error" in response.json()


def test_a_token_opens_the_projects_its_user_has_a_role_in_and_no_other(client, user, other_user):
    project = project_with_images(user, per_class=1)
    mine = project_with_images(other_user, per_class=1, name="Mallory's")
    viewer = member(project, "vic", "viewer")
    _, secret = tokens.token_create(user=viewer, name="laptop")
    assert client.get(f"{API}/projects/{project.pk}/versions", **_bearer(secret)).status_code == 200
    assert client.get(f"{API}/projects/{mine.pk}/versions", **_bearer(secret)).status_code == 404
    assert client.get(f"{API}/projects/{mine.pk + 999}/versions", **_bearer(secret)).status_code == 404
    assert client.get(f"{API}/projects/{project.pk}/versions", **_bearer(secret + "x")).status_code == 401
    assert AuditEntry.objects.filter(action="token.created", detail__name="laptop").exists()


def test_a_revoked_token_is_refused(client, user):
    project = project_with_images(user, per_class=1)
    row, secret = tokens.token_create(user=user)
    tokens.token_revoke(token=row)
    assert client.get(f"{API}/projects/{project.pk}/versions", **_bearer(secret)).status_code == 401


def test_project_keys_created_and_revoked_are_in_the_projects_audit_trail(user):
    project = project_with_images(user, per_class=1)
    key, _ = api_keys.api_key_create(project=project, name="lims")
    api_keys.api_key_revoke(key=key)
    api_keys.api_key_revoke(key=key)  # a second revocation is no new event
    entries = AuditEntry.objects.filter(action__startswith="key.").order_by("pk")
    assert [(e.action, e.project_ref, e.detail) for e in entries] == [
        ("key.created", project.pk, {"key": key.prefix, "name": "lims"}),
        ("key.revoked", project.pk, {"key": key.prefix, "name": "lims"})]


# --- the account's tokens page ---------------------------------------------------------------------

def test_the_user_menu_links_to_the_tokens_page(alice):
    assert reverse("token_list") in alice.get(reverse("project_list")).content.decode()


def test_a_token_is_created_on_the_page_shown_once_and_works(alice, user):
    project = project_with_images(user, per_class=1)
    response = alice.post(reverse("token_create"), {"name": "notebook <b>"})
    row = PersonalToken.objects.get(user=user)
    page = response.content.decode()
    secret = page.split('id="new-api-token">')[1].split("<")[0]
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert secret.startswith("ta_pt_") and row.key_hash == api_keys.ApiKey.hash_of(secret)
    assert 'data-copy-target="new-api-token"' in page and "notebook &lt;b&gt;" in page and "notebook <b>" not in page
    later = alice.get(reverse("token_list")).content.decode()
    assert secret not in later and row.prefix in later and "never" in later
    assert alice.get(f"{API}/projects/{project.pk}/versions", **_bearer(secret)).status_code == 200


def test_a_token_is_revoked_by_its_user_only(alice, client, user, other_user):
    mine, secret = tokens.token_create(user=user, name="mine")
    theirs, _ = tokens.token_create(user=other_user, name="theirs")
    assert alice.post(reverse("token_revoke", args=[theirs.pk])).status_code == 404
    assert alice.get(reverse("token_revoke", args=[mine.pk])).status_code == 405
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert alice.post(reverse("token_revoke", args=[mine.pk])).status_code == 302
    mine.refresh_from_db()
    assert mine.revoked_at is not None and "revoked" in alice.get(reverse("token_list")).content.decode()
    assert client.get(f"{API}/projects", **_bearer(secret)).status_code == 401


def test_the_tokens_page_needs_a_sign_in(client):
    assert client.get(reverse("token_list")).status_code == 302
    assert client.post(reverse("token_create")).status_code == 302


# --- manage.py create_api_key ------------------------------------------------------------------------

def test_the_command_prints_a_personal_token_that_acts_as_the_user(client, user, capsys):
    project = project_with_images(user, per_class=1)
    call_command("create_api_key", "--user", user.username, "--personal", "--name", "cron")
    secret = capsys.readouterr().out.strip()
    assert tokens.is_token(secret) and PersonalToken.objects.get(user=user).name == "cron"
    listed = client.get(f"{API}/projects", **_bearer(secret)).json()
    assert [(p["id"], p["role"]) for p in listed] == [(project.pk, "owner")]
    entry = AuditEntry.objects.get(action="token.created")
    assert "create_api_key" in entry.actor


def test_the_command_still_makes_project_keys_and_refuses_unclear_requests(user, capsys):
    project = project_with_images(user, per_class=1)
    call_command("create_api_key", "--user", user.username, "--project", project.name)
    key = capsys.readouterr().out.strip()
    assert key.startswith("ta_") and not tokens.is_token(key)
    with pytest.raises(CommandError, match="either"):
        call_command("create_api_key", "--user", user.username)
    with pytest.raises(CommandError, match="either"):
        call_command("create_api_key", "--user", user.username, "--project", project.name, "--personal")
    with pytest.raises(CommandError, match="No user"):
        call_command("create_api_key", "--user", "nobody", "--personal")
