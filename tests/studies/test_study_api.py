"""Reading studies in the REST API (#26): started by an editor, read blind by readers' personal tokens."""
import json

import pytest

from tests.factories import member, project_with_images
from transferapp.accounts import api_keys, tokens
from transferapp.models import Image, ReadingStudy
from transferapp.studies import studies

pytestmark = pytest.mark.django_db

CLASSES = ("crimson", "teal")


def _bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def team(user):
    project = project_with_images(user, classes=CLASSES, per_class=2)
    people = {name: member(project, name, role) for name, role in
              (("ann", "labeller"), ("bob", "labeller"), ("eve", "editor"), ("vic", "viewer"))}
    secrets = {name: tokens.token_create(user=person)[1] for name, person in people.items()}
    return project, people, secrets


def _start(client, project, secret, body):
    return client.post(f"/api/v1/projects/{project.pk}/studies", json.dumps(body), content_type="application/json",
                       **_bearer(secret))


def test_an_editor_starts_a_study_by_usernames_and_a_labeller_cannot(client, team):
    project, _, secrets = team
    Image.objects.filter(project=project, label__name="teal").update(split="test")
    answer = _start(client, project, secrets["eve"], {"readers": ["ann", "bob"], "images": "test", "name": "Teal"})
    assert answer.status_code == 200, answer.content
    study = ReadingStudy.objects.get(pk=answer.json()["id"])
    assert answer.json()["n_images"] == 2 and study.name == "Teal" and study.created_by.username == "eve"
    assert _start(client, project, secrets["ann"], {"readers": ["ann", "bob"], "images": "test"}).status_code == 403
    ids = list(project.images.values_list("pk", flat=True))
    assert _start(client, project, secrets["eve"], {"readers": ["ann", "bob"], "images": ids}).json()["n_images"] == 4


@pytest.mark.parametrize("readers, says", [(["ann", "nobody"], "No one named nobody has a role"),
                                           (["ann", "vic"], "vic cannot read in this project"),
                                           (["ann"], "at least two readers")])
def test_a_refused_study_says_why(client, team, readers, says):
    project, _, secrets = team
    answer = _start(client, project, secrets["eve"], {"readers": readers, "images": "validation"})
    assert answer.status_code == 400 and says in answer.json()["error"]


def test_readers_read_by_token_and_see_no_label_or_model_answer(client, team, user):
    project, people, secrets = team
    ids = list(project.images.values_list("pk", flat=True))
    study = studies.study_create(project=project, name="", readers=[people["ann"], people["bob"]], images=ids,
                                 created_by=user)
    study.items.update(model_label="teal")
    answer = client.get(f"/api/v1/studies/{study.pk}/next?n=10", **_bearer(secrets["ann"]))
    assert answer.status_code == 200
    items = answer.json()
    assert [item["image"] for item in items] == list(study.items.values_list("pk", flat=True))
    assert all(set(item) == {"image", "file"} for item in items)
    text = answer.content.decode()
    assert "crimson" not in text and "teal" not in text and ".png" not in text
    picture = client.get(items[0]["file"], **_bearer(secrets["ann"]))
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    read = client.post(f"/api/v1/studies/{study.pk}/reads", json.dumps({"image": items[0]["image"], "label": "teal"}),
                       content_type="application/json", **_bearer(secrets["ann"]))
    assert read.status_code == 200 and read.json() == {"image": items[0]["image"], "label": "teal", "read": 1,
                                                       "images": 4, "left": 3}
    after = client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(secrets["ann"])).json()
    assert [item["image"] for item in after] == [item["image"] for item in items[1:]]
    assert len(client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(secrets["bob"])).json()) == 4


def test_only_a_reader_may_read_and_a_project_key_is_no_one(client, team, user, other_user):
    project, people, secrets = team
    study = studies.study_create(project=project, name="", readers=[people["ann"], people["bob"]],
                                 images=list(project.images.values_list("pk", flat=True)), created_by=user)
    _, key = api_keys.api_key_create(project=project)
    body = json.dumps({"image": study.items.first().pk, "label": "teal"})
    for secret, status in ((secrets["eve"], 403), (secrets["vic"], 403), (key, 403),
                           (tokens.token_create(user=other_user)[1], 404)):
        assert client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(secret)).status_code == status
        assert client.post(f"/api/v1/studies/{study.pk}/reads", body, content_type="application/json",
                           **_bearer(secret)).status_code == status
    said = client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(key)).json()["error"]
    assert "project key reads as no one" in said
    image = f"/api/v1/studies/{study.pk}/images/{study.items.first().pk}/file"
    assert client.get(image, **_bearer(secrets["vic"])).status_code == 200
    assert client.get(image, **_bearer(tokens.token_create(user=other_user)[1])).status_code == 404


def test_a_bad_read_and_a_closed_study_are_refused_in_words(client, team, user):
    project, people, secrets = team
    study = studies.study_create(project=project, name="", readers=[people["ann"], people["bob"]],
                                 images=list(project.images.values_list("pk", flat=True)), created_by=user)
    image_id = study.items.first().pk

    def read(label):
        return client.post(f"/api/v1/studies/{study.pk}/reads", json.dumps({"image": image_id, "label": label}),
                           content_type="application/json", **_bearer(secrets["ann"]))
    assert read("mauve").status_code == 400 and "not one of this study's classes" in read("mauve").json()["error"]
    studies.close(study=study)
    assert read("teal").status_code == 400 and "closed" in read("teal").json()["error"]
    assert client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(secrets["ann"])).json() == []
