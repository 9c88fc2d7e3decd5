"""Which events a project's changes announce, to whom, and how the sweep hands retries back."""
from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

from tests.factories import project_with_images
from transferapp.jobs import checks, progress
from transferapp.models import TrainingRun, Webhook, WebhookDelivery
from transferapp.training import versions as training_versions
from transferapp.webhooks import delivery as webhook_delivery
from transferapp.webhooks import events

pytestmark = pytest.mark.django_db(transaction=True)


def _hook(project, events_=Webhook.EVENTS, active=True, url="https://hooks.example/x"):
    return Webhook.objects.create(project=project, url=url, events=list(events_), secret="whsec_" + "A" * 32, active=active)


def _running(project):
    return TrainingRun.objects.create(project=project, status="running", base_model="efficientnet_lite0", preset="fast",
                                      classes=["blue", "red"], config={})


def test_a_failed_run_announces_training_failed_with_its_error(user, queue):
    project = project_with_images(user, per_class=1)
    hook = _hook(project)
    run = _running(project)
    progress.finish(run, TrainingRun.Status.FAILED, error="Training failed: the disk is full")
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event == "training.failed"
    described = delivery.payload["data"]["run"]
    assert (described["id"], described["status"], described["version"]) == (run.pk, "failed", None)
    assert described["error"] == "Training failed: the disk is full" and described["url"] == f"/runs/{run.pk}/"
    assert [job.args for job in django_rq.get_queue("intake").jobs] == [(delivery.pk, 0)]  # handed to the worker


def test_a_succeeded_run_announces_training_finished_with_its_version_and_accuracy(user, queue):
    project = project_with_images(user, per_class=1)
    hook = _hook(project, ["training.finished"])
    run = _running(project)
    progress.finish(run, TrainingRun.Status.SUCCEEDED, metrics={"accuracy": 0.91234, "n_scored": 10, "n_correct": 9},
                    message="Done.")
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event == "training.finished"
    assert delivery.payload["data"]["run"] | {"url": None} == {
        "id": run.pk, "version": 1, "status": "succeeded", "accuracy": 0.9123, "accuracy_on": "validation",
        "base_model": "efficientnet_lite0", "url": None}


def test_a_cancelled_run_an_unsubscribed_event_and_a_switched_off_webhook_announce_nothing(user, queue):
    project = project_with_images(user, per_class=1)
    _hook(project, ["version.published"])
    _hook(project, active=False)
    progress.finish(_running(project), TrainingRun.Status.FAILED, error="x")
    progress.finish(_running(project), TrainingRun.Status.CANCELLED, message="Cancelled.")
    assert not WebhookDelivery.objects.exists()


def test_an_outcome_recorded_once_is_announced_once(user, queue):
    project = project_with_images(user, per_class=1)
    _hook(project)
    run = _running(project)
    progress.finish(run, TrainingRun.Status.FAILED, error="first")
    progress.finish(run, TrainingRun.Status.FAILED, error="again")  # no longer running: not recorded
    assert WebhookDelivery.objects.count() == 1


def test_publishing_announces_version_published_once(user, queue):
    project = project_with_images(user, per_class=1)
    hook = _hook(project, ["version.published"])
    run = TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0", preset="fast",
                                     classes=["blue", "red"], config={}, version=3, metrics={"accuracy": 0.8})
    training_versions.run_publish(run=run)
    training_versions.run_publish(run=TrainingRun.objects.get(pk=run.pk))  # already the model: no news
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event == "version.published" and delivery.payload["data"]["run"]["version"] == 3


def test_emit_refuses_an_unknown_event(user):
    with pytest.raises(ValueError):
        events.emit(project_with_images(user, per_class=1), "training.exploded", {})


def test_the_sweep_hands_due_retries_back_once_and_leaves_waiting_ones(user, queue):
    project = project_with_images(user, per_class=1)
    hook = _hook(project)
    now = timezone.now()
    due = WebhookDelivery.objects.create(webhook=hook, event="drift.detected", message_id="msg_due", attempts=1,
                                         next_attempt_at=now - timedelta(seconds=1))
    WebhookDelivery.objects.create(webhook=hook, event="drift.detected", message_id="msg_later", attempts=1,
                                   next_attempt_at=now + timedelta(minutes=5))
    WebhookDelivery.objects.create(webhook=hook, event="drift.detected", message_id="msg_done", attempts=1,
                                   status="delivered", next_attempt_at=None)
    queue_ = django_rq.get_queue("intake")
    queue_.empty()
    assert webhook_delivery.retry_due() == 1
    assert webhook_delivery.retry_due() == 0  # leased: a second worker's sweep does not queue it again
    assert [job.args for job in queue_.jobs] == [(due.pk, 1)]


def test_a_run_failed_by_the_reaper_after_its_worker_went_silent_announces_training_failed(user, queue, settings):
    project = project_with_images(user, per_class=1)
    hook = _hook(project, ["training.failed"])
    run = _running(project)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1),
                                                 attempt=settings.JOB_ATTEMPTS)
    checks.run_expire_if_stale(run=TrainingRun.objects.get(pk=run.pk))
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event == "training.failed" and "stopped responding" in delivery.payload["data"]["run"]["error"]
    checks.run_expire_if_stale(run=TrainingRun.objects.get(pk=run.pk))  # already failed: no second event
    assert WebhookDelivery.objects.count() == 1
