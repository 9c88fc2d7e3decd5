"""Issue 25, item 5: the feedback API (a client's true class counts as a review; another project's
prediction is a 404) and the prediction log's listing (since, limit, only the key's project); and
the project's settings for what the log keeps."""
from datetime import UTC, timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from tests.factories import project_with_images
from transferapp.accounts import api_keys
from transferapp.models import Prediction, Project, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


def bearer(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def logged(project, *, minutes_ago=0, label="red", **fields) -> Prediction:
    run = project.runs.first() or TrainingRun.objects.create(project=project, base_model="efficientnet_lite0",
                                                             status="succeeded", version=1)
    return Prediction.objects.create(project=project, run=run, version=1, source="api", source_name="lab",
                                     created_at=timezone.now() - timedelta(minutes=minutes_ago), sha256="c" * 64,
                                     top_label=label, probability=0.8, prediction_set=[label], novelty=0.1, **fields)


@pytest.fixture
def two_projects(user, other_user):
    mine, theirs = project_with_images(user), project_with_images(other_user, name="Theirs")
    return (mine, api_keys.api_key_create(project=mine)[1]), (theirs, api_keys.api_key_create(project=theirs)[1])


def feedback(client, key, pk, label):
    return client.post(f"{API}/predictions/{pk}/feedback", data={"label": label}, content_type="application/json", **bearer(key))


def test_feedback_records_a_review_from_the_api(client, two_projects):
    (project, key), _ = two_projects
    prediction = logged(project, label="red")
    response = feedback(client, key, prediction.pk, "blue")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == prediction.pk and body["review"]["label"] == "blue" and body["review"]["source"] == "api"
    prediction.refresh_from_db()
    assert (prediction.review_label, prediction.review_source, prediction.correct) == ("blue", "api", False)
    assert prediction.reviewed_at is not None and prediction.reviewed_by is None


def test_feedback_on_another_projects_prediction_is_a_404_and_changes_nothing(client, two_projects):
    (_, my_key), (theirs, _) = two_projects
    prediction = logged(theirs)
    response = feedback(client, my_key, prediction.pk, "red")
    assert response.status_code == 404 and "error" in response.json()
    assert feedback(client, my_key, 999999, "red").status_code == 404
    prediction.refresh_from_db()
    assert prediction.review_label == ""


def test_probing_prediction_ids_counts_against_the_keys_allowance(client, two_projects, settings):
    settings.API_RATE_PER_MIN = 5
    (project, key), (theirs, _) = two_projects
    probed = [logged(theirs).pk] + [999990 + i for i in range(4)]
    assert [feedback(client, key, pk, "red").status_code for pk in probed] == [404] * 5
    response = feedback(client, key, 999999, "red")
    assert response.status_code == 429 and "Too many requests" in response.json()["error"]
    assert feedback(client, key, logged(project).pk, "red").status_code == 429  # the key's own, too: one allowance


def test_feedback_with_an_unknown_label_is_a_400_with_a_sentence(client, two_projects):
    (project, key), _ = two_projects
    prediction = logged(project)
    response = feedback(client, key, prediction.pk, "purple")
    assert response.status_code == 400
    assert "not a class of this project" in response.json()["error"]
    assert feedback(client, "ta_not-a-key", prediction.pk, "red").status_code == 401
    prediction.refresh_from_db()
    assert prediction.review_label == ""


def test_the_listing_is_newest_first_and_honours_since_and_limit(client, two_projects):
    (project, key), (theirs, their_key) = two_projects
    rows = [logged(project, minutes_ago=m, file_name=f"{m}.jpg") for m in (50, 40, 30, 20, 10)]
    logged(theirs, minutes_ago=5, file_name="theirs.jpg")
    rows[1].review_label, rows[1].review_source, rows[1].reviewed_at = "blue", "queue", timezone.now()
    rows[1].save()

    listed = client.get(f"{API}/projects/{project.pk}/predictions", **bearer(key)).json()
    assert [item["file"] for item in listed] == ["10.jpg", "20.jpg", "30.jpg", "40.jpg", "50.jpg"]
    item = listed[3]
    assert set(item) == {"id", "created_at", "version", "source", "source_name", "file", "top", "prediction_set", "abstained",
                         "unfamiliar", "novelty", "seen_in_training", "audit", "review"}
    assert item["review"]["label"] == "blue" and item["review"]["source"] == "queue" and listed[0]["review"] is None
    assert item["top"] == {"label": "red", "probability": 0.8} and item["source_name"] == "lab"

    since = rows[2].created_at.isoformat()  # after the 30-minute one
    assert [i["file"] for i in client.get(f"{API}/projects/{project.pk}/predictions", {"since": since}, **bearer(key)).json()] == [
        "10.jpg", "20.jpg"]
    naive_utc = rows[2].created_at.astimezone(UTC).replace(tzinfo=None)  # no zone: read as UTC
    assert len(client.get(f"{API}/projects/{project.pk}/predictions", {"since": naive_utc.isoformat()}, **bearer(key)).json()) == 2
    assert [i["file"] for i in client.get(f"{API}/projects/{project.pk}/predictions", {"limit": 2}, **bearer(key)).json()] == [
        "10.jpg", "20.jpg"]
    assert client.get(f"{API}/projects/{project.pk}/predictions", {"limit": 0}, **bearer(key)).status_code == 422
    assert client.get(f"{API}/projects/{project.pk}/predictions", {"since": "yesterday"}, **bearer(key)).status_code == 422

    # Another project's log is a 404 for this key; its own key sees only its own rows.
    assert client.get(f"{API}/projects/{theirs.pk}/predictions", **bearer(key)).status_code == 404
    assert [i["file"] for i in client.get(f"{API}/projects/{theirs.pk}/predictions", **bearer(their_key)).json()] == ["theirs.jpg"]


def test_the_owner_sets_what_the_log_keeps_on_the_project_page(alice, user, other_user):
    project = project_with_images(user)
    page = alice.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert 'id="prediction-log"' in page and 'name="keep_prediction_images" checked' in page
    url = reverse("project_prediction_log", args=[project.pk])
    alice.post(url, {"audit_percent": "25"})  # the box unticked
    project.refresh_from_db()
    assert (project.keep_prediction_images, project.audit_percent) == (False, 25)
    response = alice.post(url, {"keep_prediction_images": "on", "audit_percent": "250"}, follow=True)
    assert "from 0 to 100" in response.content.decode()
    project.refresh_from_db()
    assert (project.keep_prediction_images, project.audit_percent) == (False, 25)
    theirs = project_with_images(other_user, name="Theirs")
    assert alice.post(reverse("project_prediction_log", args=[theirs.pk]), {"audit_percent": "5"}).status_code == 404
    assert Project.objects.get(pk=theirs.pk).audit_percent == 10
