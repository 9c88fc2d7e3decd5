"""The agreement page, its CSV and GET /api/v1/studies/{sid}/agreement (#26): editors any time
(interim while open), the study's readers only once it is closed, a stranger 404."""
import csv
import io

import pytest
from sklearn.metrics import cohen_kappa_score

from tests.factories import member, project_with_images
from transferapp.accounts import api_keys, tokens
from transferapp.models import StudyImage
from transferapp.studies import studies

pytestmark = pytest.mark.django_db

ANN = ["red"] * 5 + ["blue"] * 5
BOB = ["red"] * 4 + ["blue"] * 5 + ["red"]


@pytest.fixture
def study(user):
    project = project_with_images(user, per_class=5)
    ann, bob = member(project, "ann", "labeller"), member(project, "bob", "labeller")
    member(project, "ed", "editor")
    member(project, "vic", "viewer")
    ids = list(project.images.order_by("pk").values_list("pk", flat=True))
    made = studies.study_create(project=project, name="Double <reading>", readers=[ann, bob], images=ids, created_by=user)
    for reader, labels in ((ann, ANN), (bob, BOB)):
        for item_id, label in zip(made.items.values_list("pk", flat=True), labels):
            studies.read(study=made, reader=reader, item_id=item_id, label=label)
    StudyImage.objects.filter(study=made).update(model_label="red")
    StudyImage.objects.filter(study=made, position__gte=5).update(model_label="blue")
    StudyImage.objects.filter(study=made, position=9).update(adjudicated_label="blue")
    return made


def _as(client, django_user_model, name):
    client.force_login(django_user_model.objects.get(username=name))
    return client


def _status(client, django_user_model, name, url):
    return _as(client, django_user_model, name).get(url).status_code


def test_editors_see_interim_figures_readers_wait_for_the_close_strangers_get_404(client, django_user_model, user, other_user, study):
    url = f"/studies/{study.pk}/agreement/"
    assert {name: _status(client, django_user_model, name, url) for name in ("ed", "ann", "vic")} == {"ed": 200, "ann": 403, "vic": 403}
    assert _status(client, django_user_model, other_user.username, url) == 404
    assert _status(client, django_user_model, "ed", f"/studies/{study.pk + 999}/agreement/") == 404
    page = _as(client, django_user_model, user.username).get(url).content.decode()
    assert "interim" in page and "Double &lt;reading&gt;" in page and "<svg" in page
    expected = cohen_kappa_score(ANN, BOB)
    assert f"{expected:.2f}" in page and "Landis" in page and "95% interval" in page
    studies.close(study=study)
    assert _status(client, django_user_model, "ann", url) == 200
    assert _status(client, django_user_model, "vic", url) == 200  # closed: a viewer sees it, as every result
    assert "interim" not in _as(client, django_user_model, "bob").get(url).content.decode()


def test_the_confusion_matrix_compares_the_picked_raters_and_refuses_unknown_names(client, django_user_model, study):
    client = _as(client, django_user_model, "ed")
    page = client.get(f"/studies/{study.pk}/agreement/?a=bob&b=:model", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="confusion"' in page and "the model →" in page and "bob ↓" in page and "<h1" not in page
    fallback = client.get(f"/studies/{study.pk}/agreement/?a=mallory&b=ann").content.decode()
    assert "ann ↓" in fallback and "mallory" not in fallback


def test_the_csv_has_one_row_per_image_with_every_read_the_majority_the_adjudicated_label_and_the_model(client, django_user_model, study):
    response = _as(client, django_user_model, "ed").get(f"/studies/{study.pk}/agreement/reads.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["image", "ann", "bob", "majority", "adjudicated", "model"]
    assert len(rows) == 11
    assert rows[-1][1:] == ["blue", "red", "", "blue", "blue"]  # a 1-1 split has no majority
    assert _status(client, django_user_model, "ann", f"/studies/{study.pk}/agreement/reads.csv") == 403


def _bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_the_api_gives_the_named_figures_to_editors_and_keys_and_to_readers_after_the_close(client, django_user_model, study, other_user):
    url = f"/api/v1/studies/{study.pk}/agreement"
    _, key = api_keys.api_key_create(project=study.project)
    body = client.get(url, **_bearer(key)).json()
    assert body["n_images"] == 10 and body["interim"] is True
    assert body["pairs"][0]["readers"] == ["ann", "bob"]
    assert body["pairs"][0]["kappa"] == pytest.approx(cohen_kappa_score(ANN, BOB), abs=1e-9)
    low, high = body["pairs"][0]["interval"]
    assert low <= body["pairs"][0]["kappa"] <= high
    assert "fleiss_kappa" in body and [m["reader"] for m in body["model"]] == ["ann", "bob"]
    assert body["model"][0]["kappa"] == pytest.approx(1.0) and {row["name"] for row in body["per_class"]} == {"red", "blue"}
    assert body["model_accuracy"]["adjudicated"] == {"accuracy": 1.0, "interval": [1.0, 1.0], "n": 1, "hits": 1}
    tokens_of = {name: tokens.token_create(user=django_user_model.objects.get(username=name))[1]
                 for name in ("ed", "ann", "vic", other_user.username)}
    assert client.get(url, **_bearer(tokens_of["ed"])).status_code == 200
    refused = client.get(url, **_bearer(tokens_of["ann"]))
    assert refused.status_code == 403 and "closed" in refused.json()["error"]
    assert client.get(url, **_bearer(tokens_of["vic"])).status_code == 403
    assert client.get(url, **_bearer(tokens_of[other_user.username])).status_code == 404
    other_project = project_with_images(other_user, per_class=1, name="Mallory's")
    _, other_key = api_keys.api_key_create(project=other_project)
    assert client.get(url, **_bearer(other_key)).status_code == 404
    studies.close(study=study)
    assert client.get(url, **_bearer(tokens_of["ann"])).json()["interim"] is False
