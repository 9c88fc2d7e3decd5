"""The monitoring page and `GET /api/v1/projects/{id}/monitoring` (#25): charts for the owner, a 404
for anyone else, an empty state before anything is logged; the API's fields, for its own key only.

The prediction log's rows are made directly here (the logging itself is tested with it); drift on
a real model's features is tests/reporting/test_drift.py."""
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.factories import project_with_images
from transferapp.accounts import api_keys
from transferapp.models import Prediction

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


def logged(project, *, days_ago=0, source="api", label="red", probability=0.9, abstained=False, review="",
           review_source="", audit=False, n=1):
    now = timezone.now() - timedelta(days=days_ago)
    return Prediction.objects.bulk_create([
        Prediction(project=project, version=1, created_at=now - timedelta(seconds=i), source=source,
                   sha256=f"{days_ago}{source}{label}{i}".ljust(64, "0"), top_label=label, probability=probability,
                   abstained=abstained, novelty=0.1 + 0.01 * i, audit=audit, review_label=review,
                   review_source=review_source, reviewed_at=now if review else None)
        for i in range(n)])


@pytest.fixture
def project(user):
    project = project_with_images(user, per_class=1)
    logged(project, source="page", n=12)
    logged(project, days_ago=1, source="api", label="blue", probability=0.55, abstained=True, n=8)
    logged(project, days_ago=2, source="batch", n=5)
    logged(project, days_ago=3, audit=True, review="red", review_source="queue", n=2)  # right
    logged(project, days_ago=3, audit=True, review="blue", review_source="api", n=1)  # wrong
    logged(project, days_ago=20, source="page", n=4)  # outside the last 7 days
    return project


def test_the_owner_sees_charts_of_the_period_another_user_a_404(alice, project, other_user):
    page = reverse("project_monitoring", args=[project.pk])
    body = alice.get(page).content.decode()
    assert body.count('<svg viewBox') >= 6
    for title in ("Predictions per day, by source", "Answers per class, against the training images",
                  "How sure the answers were", "“Don&#x27;t know” answers and confidence per day", "Novelty score per day"):
        assert f'aria-label="{title}' in body, title
    assert "32 predictions in the last 30 days" in body
    assert "2 reviews from the review queue and 1 from the feedback API" in body
    assert 'v1 live' in body and "2/3 right" in body  # live accuracy: k/n and its interval, drawn
    assert 'href="?days=30" aria-current="page"' in body
    week = alice.get(page, {"days": "7"}).content.decode()
    assert "28 predictions in the last 7 days" in week and 'href="?days=7" aria-current="page"' in week
    assert "28 predictions in the last 30 days" not in alice.get(page, {"days": "1000"}).content.decode()  # not a period: 30
    assert reverse("project_monitoring", args=[project.pk]) in alice.get(project.get_absolute_url()).content.decode()

    stranger = Client()
    stranger.force_login(other_user)
    assert stranger.get(page).status_code == 404
    assert Client().get(page).status_code == 302  # to the sign-in page


def test_a_project_with_nothing_logged_shows_the_empty_state(alice, user):
    project = project_with_images(user, per_class=1, name="Quiet")
    body = alice.get(reverse("project_monitoring", args=[project.pk])).content.decode()
    assert 'id="monitoring-empty"' in body and "Nothing logged yet" in body and "<svg" not in body


def test_the_api_returns_the_monitoring_figures_for_its_own_project_only(client, project, user):
    _, key = api_keys.api_key_create(project=project)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    answer = client.get(f"{API}/projects/{project.pk}/monitoring", {"days": 30}, **auth)
    assert answer.status_code == 200, answer.content
    figures = answer.json()
    assert figures["predictions"] == 32 and figures["days"] == 30 and len(figures["by_day"]) == 30
    assert figures["live_accuracy"] == [{"version": 1, "k": 2, "n": 3, "interval": figures["live_accuracy"][0]["interval"]}]
    low, high = figures["live_accuracy"][0]["interval"]
    assert 0.2 < low < 2 / 3 < high < 1
    assert figures["reviews"] == {"queue": 2, "api": 1}
    assert figures["abstained_rate"] == round(8 / 32, 4)
    today, yesterday = figures["by_day"][-1], figures["by_day"][-2]
    assert (today["page"], today["api"], today["batch"], today["total"]) == (12, 0, 0, 12)
    assert yesterday["api"] == 8 and yesterday["abstained_rate"] == 1.0
    mix = {row["label"]: row["predicted"] for row in figures["class_mix"]}
    assert mix == {"red": 24, "blue": 8}  # the reviewed ones answered red
    assert set(figures["drift"]) >= {"p_value", "unlike_share", "sentence", "detected"}
    assert figures["drift"]["n"] == 28 and figures["drift"]["detected"] is False
    assert sum(figures["confidence"]["bins"]) == 32

    week = client.get(f"{API}/projects/{project.pk}/monitoring", {"days": 7}, **auth).json()
    assert week["predictions"] == 28 and len(week["by_day"]) == 7
    assert client.get(f"{API}/projects/{project.pk}/monitoring", {"days": 0}, **auth).status_code == 422

    other = project_with_images(user, per_class=1, name="Another")
    _, other_key = api_keys.api_key_create(project=other)
    refused = client.get(f"{API}/projects/{project.pk}/monitoring", HTTP_AUTHORIZATION=f"Bearer {other_key}")
    assert refused.status_code == 404 and "error" in refused.json()
    assert client.get(f"{API}/projects/{project.pk}/monitoring").status_code == 401
