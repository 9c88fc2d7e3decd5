"""The progress page's time-left: the engine's priced estimate when it has one, else the pace so far."""
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import project_with_images
from transferapp.models import TrainingRun
from transferapp.training import estimates


def _running(project, **fields):
    # Half done after 10 minutes: the pace alone says about 10 more minutes.
    return TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="running",
                                      started_at=timezone.now() - timedelta(minutes=10), progress=0.5,
                                      history=[{"epoch": 1, "stage": "finetune"}], **fields)


@pytest.mark.django_db
def test_the_page_shows_the_engines_priced_estimate_counted_down_since_it_was_sent(alice, user):
    project = project_with_images(user)
    run = _running(project, seconds_left=300, heartbeat_at=timezone.now() - timedelta(seconds=60))
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "about 4 min left" in page and "rough" not in page


@pytest.mark.django_db
def test_without_a_priced_estimate_the_pace_so_far_is_used(user):
    run = _running(project_with_images(user), heartbeat_at=timezone.now())
    assert estimates.time_left(run, timezone.now()).text == "about 10 min left"


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_during_a_silent_step_keeps_the_estimate_counting_down(user):
    """The worker's heartbeat moves heartbeat_at every 20 s while a step reports nothing; the
    estimate, "as of heartbeat_at", must move with it instead of jumping back up."""
    from transferapp.jobs.tries import Heartbeat

    run = _running(project_with_images(user), seconds_left=300, heartbeat_at=timezone.now() - timedelta(seconds=120))
    Heartbeat(run).beat()
    run.refresh_from_db()
    assert 175 <= run.seconds_left <= 181 and timezone.now() - run.heartbeat_at < timedelta(seconds=5)
    assert estimates.time_left(run, timezone.now()).text == "about 3 min left"
