"""Webhook deliveries sent by a real worker process (the `intake` queue) over real HTTP, to a real
receiver in this test, through the real Redis queue; the worker's settings come from its environment."""
import json
import time

import pytest
import standardwebhooks
from django.urls import reverse

from tests.api_support import photo_project, train_version
from tests.jobs.test_failures import start_worker  # noqa: F401 (a fixture)
from tests.webhooks.receiver import Receiver
from transferapp.models import WebhookDelivery
from transferapp.webhooks import events, hooks

pytestmark = pytest.mark.django_db(transaction=True)

# The receiver is on 127.0.0.1: the worker may send there only when the operator allows it. A sweep
# every second hands retries back to the queue quickly (in production: every REAPER_INTERVAL_S).
WORKER_ENV = {"WEBHOOK_ALLOW_PRIVATE": "true", "REAPER_INTERVAL_S": "1"}


def _wait_until_settled(delivery, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivery.refresh_from_db()
        if delivery.status != WebhookDelivery.Status.PENDING:
            return delivery
        time.sleep(0.2)
    raise AssertionError(f"delivery {delivery.pk} still pending after {delivery.attempts} tries ({delivery.last_error})")


def test_a_finished_training_reaches_the_receiver_signed_with_the_webhooks_secret(user, queue, settings, start_worker):  # noqa: F811
    settings.WEBHOOK_ALLOW_PRIVATE = True
    project = photo_project(user)
    with Receiver() as receiver:
        hook = hooks.webhook_create(project=project, url=receiver.url, events=["training.finished", "training.failed"])
        assert hook.secret.startswith("whsec_")
        run = train_version(project)  # a real training; its end is announced
        start_worker(queues=("intake",), **WORKER_ENV)
        [got] = receiver.wait_for(1)
        delivery = _wait_until_settled(WebhookDelivery.objects.get(webhook=hook))
    assert got.path == "/hooks/transferapp?source=test"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"] == delivery.message_id
    assert got.headers["webhook-signature"].startswith("v1,")
    payload = standardwebhooks.Webhook(hook.secret).verify(got.body, got.headers)  # raises if it does not verify
    assert payload["type"] == "training.finished"
    assert payload["data"]["project"] == {"id": project.pk, "name": project.name}
    described = payload["data"]["run"]
    assert (described["id"], described["version"], described["status"]) == (run.pk, 1, "succeeded")
    assert described["accuracy"] == round(run.metrics["accuracy"], 4) and described["url"] == f"/runs/{run.pk}/"
    # Another secret, or a changed body, does not verify.
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(hooks.targets.new_secret()).verify(got.body, got.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(hook.secret).verify(got.body.replace(b"succeeded", b"failed"), got.headers)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert json.loads(got.body) == delivery.payload


def test_a_receiver_that_answers_500_gets_the_event_again_after_a_backoff(user, queue, settings, alice, start_worker):  # noqa: F811
    settings.WEBHOOK_ALLOW_PRIVATE = True
    project = photo_project(user, per_class=1)
    with Receiver(answers=(500, 204)) as receiver:
        hook = hooks.webhook_create(project=project, url=receiver.url, events=["version.published"])
        start_worker(queues=("intake",), **WORKER_ENV)
        delivery = events.send_test(hook)
        first, second = receiver.wait_for(2, timeout_s=90)
        delivery = _wait_until_settled(delivery)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 204)
    assert second.at - first.at >= 4.5  # the first backoff (5 s), not at once
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.message_id  # receivers dedupe on it
    for got in (first, second):
        assert standardwebhooks.Webhook(hook.secret).verify(got.body, got.headers)["type"] == "webhook.test"
    page = alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
    row = page.split(f'data-delivery="{delivery.pk}"')[1].split("</tr>")[0]
    assert "webhook.test" in row and "Delivered" in row and "204" in row and '<td class="attempts">2</td>' in row


def test_the_worker_checks_the_url_again_and_gives_up_after_its_tries(user, queue, settings, start_worker):  # noqa: F811
    """Saved while private addresses were allowed; the worker (not allowing them) refuses to send."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    project = photo_project(user, per_class=1)
    with Receiver() as receiver:
        hook = hooks.webhook_create(project=project, url=receiver.url, events=["version.published"])
        start_worker(queues=("intake",), REAPER_INTERVAL_S="1", WEBHOOK_MAX_ATTEMPTS="2")
        delivery = _wait_until_settled(events.send_test(hook), timeout_s=90)
        time.sleep(0.5)
    assert receiver.received == []
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 2, None)
    assert "cannot receive webhooks" in delivery.last_error and "127.0.0.1" not in delivery.last_error
