"""Announcing a project's events to its webhooks."""
import logging
import secrets

import django_rq
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from transferapp.models import Project, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)
DELIVERY_TASK = "transferapp.jobs.tasks.deliver_webhook"
DELIVERY_QUEUE = "intake"  # never behind a training; imports are chunked, so a delivery waits little


def emit(project: Project, event: str, data: dict) -> list[WebhookDelivery]:
    """One pending delivery for each active webhook of `project` that subscribed to `event`,
    sent by the worker after the current transaction commits (nothing is sent for a rolled-back change)."""
    if event not in Webhook.EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    hooks = [hook for hook in project.webhooks.filter(active=True) if event in hook.events]
    payload = {"type": event, "timestamp": timezone.now().isoformat(),
               "data": {"project": {"id": project.pk, "name": project.name}, **data}}
    deliveries = [WebhookDelivery.objects.create(webhook=hook, event=event, payload=payload,
                                                 message_id=f"msg_{secrets.token_hex(12)}") for hook in hooks]
    for delivery in deliveries:
        transaction.on_commit(lambda pk=delivery.pk: enqueue_delivery(pk))
    return deliveries


def enqueue_delivery(delivery_pk: int, delay_s: float = 0) -> None:
    """Hand a delivery to the worker; with Redis away it stays pending in the log (a sweep may retry)."""
    try:
        queue = django_rq.get_queue(DELIVERY_QUEUE)
        if delay_s:
            queue.enqueue_in(timezone.timedelta(seconds=delay_s), DELIVERY_TASK, delivery_pk)
        else:
            queue.enqueue(DELIVERY_TASK, delivery_pk)
    except RedisError:
        logger.exception("Could not enqueue webhook delivery %s", delivery_pk)
