"""Announcing a project's events to its webhooks."""
import logging
import secrets

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from transferapp.models import Project, TrainingRun, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)
DELIVERY_TASK = "transferapp.jobs.tasks.deliver_webhook"
DELIVERY_QUEUE = "intake"  # never behind a training; imports are chunked, so a delivery waits little
TEST_EVENT = "webhook.test"  # "Send a test event": to one webhook, whatever it subscribed to
# A delivery handed to the queue is not handed over again (by the sweep, delivery.retry_due) for
# this long: a job that Redis lost is sent again afterwards, a job merely waiting is not doubled.
ENQUEUED_LEASE_S = 600
TEST_MAX_ATTEMPTS = 2  # a test event is tried once more at most: it checks a receiver, it carries no news


def emit(project: Project, event: str, data: dict) -> list[WebhookDelivery]:
    """One pending delivery for each active webhook of `project` that subscribed to `event`,
    sent by the worker after the current transaction commits (nothing is sent for a rolled-back change)."""
    if event not in Webhook.EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    hooks = [hook for hook in project.webhooks.filter(active=True) if event in hook.events]
    return [_record(hook, event, data) for hook in hooks]


def send_test(webhook: Webhook) -> WebhookDelivery | None:
    """A `webhook.test` event to this one webhook (active or not), to check the receiver and its secret.
    None while an earlier test event to it is still pending: one at a time, so pressing the button
    thirty times queues one delivery, not thirty."""
    with transaction.atomic():
        Webhook.objects.select_for_update().filter(pk=webhook.pk).first()  # two presses at once: one waits
        if test_pending(webhook):
            return None
        return _record(webhook, TEST_EVENT, {"message": "A test event from transferapp: your receiver works."})


def test_pending(webhook: Webhook) -> bool:
    return WebhookDelivery.objects.filter(webhook=webhook, event=TEST_EVENT, status=WebhookDelivery.Status.PENDING).exists()


def _record(hook: Webhook, event: str, data: dict) -> WebhookDelivery:
    project = hook.project
    payload = {"type": event, "timestamp": timezone.now().isoformat(),
               "data": {"project": {"id": project.pk, "name": project.name}, **data}}
    delivery = WebhookDelivery.objects.create(
        webhook=hook, event=event, payload=payload, message_id=f"msg_{secrets.token_hex(12)}",
        next_attempt_at=timezone.now() + timezone.timedelta(seconds=ENQUEUED_LEASE_S))
    transaction.on_commit(lambda pk=delivery.pk: enqueue_delivery(pk, attempt=0))
    return delivery


def enqueue_delivery(delivery_pk: int, attempt: int | None = None) -> bool:
    """Hand a delivery to the worker, for its try after `attempt` earlier ones (a second job for the
    same try then does nothing). With Redis away it stays pending in the log; the sweep retries it.
    No delay here: the workers run no rq scheduler, so a retry's wait is kept by the sweep."""
    try:
        django_rq.get_queue(DELIVERY_QUEUE).enqueue(DELIVERY_TASK, delivery_pk, attempt,
                                                   job_timeout=settings.WEBHOOK_TIMEOUT_SECONDS * 3 + 30)
        return True
    except RedisError:
        logger.exception("Could not enqueue webhook delivery %s", delivery_pk)
        return False


# --- what the events say ----------------------------------------------------------------------

def announce_run_end(run_pk: int) -> None:
    """training.finished / training.failed for a run whose end was just recorded; a failure here is
    logged, never raised: the run's outcome is recorded already and must not be undone."""
    try:
        run = TrainingRun.objects.select_related("project").filter(pk=run_pk).first()
        if run is not None:
            training_ended(run)
    except Exception:
        logger.exception("Run %s: could not announce its end to the webhooks", run_pk)


def training_ended(run: TrainingRun) -> list[WebhookDelivery]:
    """training.finished (a new version) or training.failed, for a run that has just ended so."""
    if run.status == TrainingRun.Status.SUCCEEDED:
        event = "training.finished"
    elif run.status == TrainingRun.Status.FAILED:
        event = "training.failed"
    else:
        return []  # cancelled by its owner: nobody needs telling
    return emit(run.project, event, {"run": run_summary(run)})


def version_published(run: TrainingRun) -> list[WebhookDelivery]:
    return emit(run.project, "version.published", {"run": run_summary(run)})


def run_summary(run: TrainingRun) -> dict:
    """A run as the events describe it: its id, version, status, headline accuracy and page."""
    metrics = run.metrics or {}
    accuracy = metrics.get("accuracy")
    summary = {"id": run.pk, "version": run.version, "status": run.status,
               "accuracy": round(float(accuracy), 4) if accuracy is not None and not metrics.get("interim") else None,
               "accuracy_on": run.scored_images if accuracy is not None else None,
               "base_model": run.base_model, "url": run.get_absolute_url()}
    if run.status == TrainingRun.Status.FAILED:
        summary["error"] = (run.error or "")[:500]
    return summary
