"""Sending a delivery from the worker: signed per the Standard Webhooks spec, retried with backoff.

One try: claim it (a conditional update, so two jobs for the same try send it once), check the URL
again and connect to the address checked (targets.py), POST the signed JSON, record the answer. A
2xx is delivered; anything else (or no answer) waits BACKOFF_S and is tried again, up to
WEBHOOK_MAX_ATTEMPTS tries, then it has failed. The workers run no rq scheduler, so the wait is kept
in the row (next_attempt_at) and every worker's reaper hands due deliveries back to the queue
(retry_due, each REAPER_INTERVAL_S): a retry comes within a sweep of its time, also after a restart.
"""
import http.client
import json
import logging
from datetime import UTC, datetime, timedelta

import standardwebhooks
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from transferapp.models import WebhookDelivery
from transferapp.webhooks import events, targets

logger = logging.getLogger(__name__)

# The wait after the 1st, 2nd, ... failed try; the last one repeats.
BACKOFF_S = (5, 30, 120, 600, 3600, 6 * 3600)
RESPONSE_READ_LIMIT = 4096  # what is read of a receiver's answer (only its status matters)
USER_AGENT = "transferapp-webhooks/1"


def backoff_s(failed_tries: int) -> int:
    return BACKOFF_S[min(max(failed_tries, 1), len(BACKOFF_S)) - 1]


def sending_lease_s() -> int:
    """A try that is being sent is not handed out again for this long (a killed worker's is, afterwards)."""
    return settings.WEBHOOK_TIMEOUT_SECONDS * 3 + 60


def deliver(delivery_pk: int, attempt: int | None = None) -> str:
    """One try of a delivery, if it is still pending and no other job took this try (`attempt`: the
    number of tries before it, as the job was queued; None: whatever try is next)."""
    delivery = WebhookDelivery.objects.select_related("webhook", "webhook__project").filter(pk=delivery_pk).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return "not pending"
    tried = delivery.attempts if attempt is None else attempt
    now = timezone.now()
    if not WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=tried).update(
            attempts=F("attempts") + 1, next_attempt_at=now + timedelta(seconds=sending_lease_s())):
        return "taken by another job"
    delivery.attempts = tried + 1
    hook = delivery.webhook
    if not hook.active and delivery.event != events.TEST_EVENT:
        _record(delivery, ok=False, status_code=None, error="The webhook was switched off.", final=True)
        return "webhook off"
    status_code, error = _send(delivery)
    ok = status_code is not None and 200 <= status_code < 300
    if not ok and not error:
        error = f"The receiver answered {status_code}."
    _record(delivery, ok=ok, status_code=status_code, error=error,
            final=ok or delivery.attempts >= max_attempts(delivery))
    return delivery.status


def max_attempts(delivery: WebhookDelivery) -> int:
    """How many tries a delivery gets: a test event is retried once at most."""
    if delivery.event == events.TEST_EVENT:
        return min(events.TEST_MAX_ATTEMPTS, settings.WEBHOOK_MAX_ATTEMPTS)
    return settings.WEBHOOK_MAX_ATTEMPTS


def _send(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """(the receiver's status code or None, what went wrong or '')."""
    hook = delivery.webhook
    try:
        target = targets.check_url(hook.url)  # again: the host may resolve elsewhere since it was saved
    except targets.UrlRefused as exc:
        return None, str(exc)
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    sent_at = datetime.now(tz=UTC)
    headers = {
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(hook.secret).sign(delivery.message_id, sent_at, body),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    conn = target.connection(settings.WEBHOOK_TIMEOUT_SECONDS)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(RESPONSE_READ_LIMIT)
        return response.status, ""
    except TimeoutError:
        return None, f"No answer within {settings.WEBHOOK_TIMEOUT_SECONDS} s."
    except OSError as exc:  # refused, reset, TLS, unreachable
        return None, f"Could not reach the receiver: {exc.strerror or exc}"[:300]
    except (http.client.HTTPException, ValueError) as exc:  # a malformed answer, an odd URL path
        return None, f"The receiver's answer could not be read: {type(exc).__name__}"[:300]
    finally:
        conn.close()


def _record(delivery: WebhookDelivery, *, ok: bool, status_code: int | None, error: str, final: bool) -> None:
    now = timezone.now()
    if ok:
        fields = {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": now, "next_attempt_at": None, "last_error": ""}
    elif final:
        fields = {"status": WebhookDelivery.Status.FAILED, "next_attempt_at": None, "last_error": error[:300]}
    else:
        fields = {"next_attempt_at": now + timedelta(seconds=backoff_s(delivery.attempts)), "last_error": error[:300]}
    fields["last_status_code"] = status_code
    # This try's row only: a later try (after a lease ran out) records its own answer.
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    if not ok:
        logger.info("Webhook delivery %s (try %s) failed: %s", delivery.pk, delivery.attempts, error)


def retry_due(limit: int = 200) -> int:
    """Hand the pending deliveries whose time has come back to the queue (each worker's reaper calls
    this): retries after their backoff, and tries whose job Redis lost or whose worker was killed
    (their lease ran out). Each is leased first, so several workers sweeping at once queue it once."""
    now = timezone.now()
    due = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
               .filter(Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
               .values_list("pk", "attempts", "next_attempt_at")[:limit])
    queued = 0
    for pk, attempts, due_at in due:
        leased = WebhookDelivery.objects.filter(pk=pk, attempts=attempts, next_attempt_at=due_at).update(
            next_attempt_at=now + timedelta(seconds=events.ENQUEUED_LEASE_S))
        if leased and events.enqueue_delivery(pk, attempt=attempts):
            queued += 1
    return queued
