"""The project's webhooks page: add (the secret shown once), switch off, delete, test; owner only;
every change a POST with the CSRF token; user text escaped."""
import io

import pytest
import standardwebhooks
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from tests.factories import project_with_images
from tests.webhooks.receiver import Receiver
from transferapp.models import Webhook, WebhookDelivery
from transferapp.webhooks import delivery as webhook_delivery
from transferapp.webhooks import events, hooks

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(user):
    return project_with_images(user, per_class=1)


def _add(client, project, url, events=("training.finished", "version.published")):
    return client.post(reverse("webhook_create", args=[project.pk]), {"url": url, "events": list(events)})


def test_the_project_page_links_to_its_webhooks(alice, project):
    page = alice.get(project.get_absolute_url()).content.decode()
    assert reverse("webhooks_page", args=[project.pk]) in page


def test_a_new_webhooks_secret_is_shown_once(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    response = _add(alice, project, "http://127.0.0.1:9/hook")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    hook = Webhook.objects.get(project=project)
    assert hook.events == ["training.finished", "version.published"] and hook.active
    assert hook.secret.startswith("whsec_") and f'<code id="new-webhook-secret">{hook.secret}</code>' in response.content.decode()
    page = alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
    assert "http://127.0.0.1:9/hook" in page and "training.finished, version.published" in page
    assert hook.secret not in page and hook.secret[6:20] not in page  # never again


def test_a_private_url_is_refused_on_the_page_and_nothing_is_saved(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    for url in ("http://127.0.0.1/hook", "http://10.0.0.5/hook", "http://169.254.169.254/", "http://[::1]/hook"):
        response = _add(alice, project, url)
        assert response.status_code == 400
        page = response.content.decode()
        assert 'id="webhook-error"' in page and "cannot receive webhooks" in page
        assert f'value="{url}"' in page  # the form keeps what was typed
    assert not Webhook.objects.exists()


def test_an_event_must_be_chosen(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    response = _add(alice, project, "http://127.0.0.1:9/hook", events=())
    assert response.status_code == 400 and "at least one event" in response.content.decode()
    assert not Webhook.objects.exists()


def test_switch_off_and_on_then_delete(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = hooks.webhook_create(project=project, url="http://127.0.0.1:9/hook", events=["drift.detected"])
    alice.post(reverse("webhook_toggle", args=[hook.pk]))
    hook.refresh_from_db()
    assert not hook.active
    assert "Switch on" in alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
    alice.post(reverse("webhook_toggle", args=[hook.pk]))
    hook.refresh_from_db()
    assert hook.active
    response = alice.post(reverse("webhook_delete", args=[hook.pk]))
    assert response.status_code == 302 and not Webhook.objects.exists()


def test_changes_need_a_post(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = hooks.webhook_create(project=project, url="http://127.0.0.1:9/hook", events=["drift.detected"])
    for name in ("webhook_toggle", "webhook_delete", "webhook_test"):
        assert alice.get(reverse(name, args=[hook.pk])).status_code == 405
    assert alice.get(reverse("webhook_create", args=[project.pk])).status_code == 405
    assert Webhook.objects.get(pk=hook.pk).active and not WebhookDelivery.objects.exists()


def test_changes_need_the_csrf_token(user, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = hooks.webhook_create(project=project, url="http://127.0.0.1:9/hook", events=["drift.detected"])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.post(reverse("webhook_delete", args=[hook.pk])).status_code == 403
    assert _add(browser, project, "http://127.0.0.1:9/other").status_code == 403
    assert Webhook.objects.count() == 1


def test_another_users_webhooks_are_a_404(client, other_user, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = hooks.webhook_create(project=project, url="http://127.0.0.1:9/hook", events=["drift.detected"])
    client.force_login(other_user)
    assert client.get(reverse("webhooks_page", args=[project.pk])).status_code == 404
    for name in ("webhook_toggle", "webhook_delete", "webhook_test"):
        assert client.post(reverse(name, args=[hook.pk])).status_code == 404
    assert _add(client, project, "http://127.0.0.1:9/mine").status_code == 404
    hook.refresh_from_db()
    assert hook.active and Webhook.objects.count() == 1 and not WebhookDelivery.objects.exists()


def test_the_url_and_errors_are_escaped_and_htmx_is_off_around_them(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    nasty = 'http://127.0.0.1:9/x?a="><button hx-post="/projects/1/delete/" hx-trigger="load">'
    # saved before the URL check refused quotes and angle brackets: the page still escapes it
    hook = Webhook.objects.create(project=project, url=nasty, events=["drift.detected"], secret="whsec_dGVzdA==")
    WebhookDelivery.objects.create(webhook=hook, event="drift.detected", message_id="msg_x", status="failed",
                                   last_error='<b hx-get="/x" hx-trigger="load">')
    page = alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
    assert "<button hx-post" not in page and "<b hx-get" not in page
    assert "&lt;button hx-post=&quot;/projects/1/delete/&quot;" in page
    assert '<section class="stack" id="webhooks" hx-disable>' in page and '<div class="table-wrap" hx-disable>' in page


def test_send_a_test_event_records_a_delivery_that_the_worker_sends(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with Receiver() as receiver:
        hook = hooks.webhook_create(project=project, url=receiver.url, events=["drift.detected"])
        response = alice.post(reverse("webhook_test", args=[hook.pk]))
        assert response.status_code == 302
        delivery = WebhookDelivery.objects.get(webhook=hook)
        assert delivery.event == "webhook.test" and delivery.status == "pending"
        page = alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
        assert "Pending" in page and 'hx-trigger="every 3s"' in page  # the log refreshes itself meanwhile
        log = alice.get(reverse("webhooks_page", args=[project.pk]) + "?log=1", HTTP_HX_REQUEST="true").content.decode()
        assert log.startswith('<section class="stack" id="delivery-log"') and "Add a webhook" not in log
        webhook_delivery.deliver(delivery.pk, 0)  # what the worker runs (the worker tests run it there)
    [got] = receiver.received
    assert standardwebhooks.Webhook(hook.secret).verify(got.body, got.headers)["type"] == "webhook.test"
    page = alice.get(reverse("webhooks_page", args=[project.pk])).content.decode()
    assert "Delivered" in page and 'hx-trigger="every 3s"' not in page  # nothing pending: no polling


def test_a_test_event_is_sent_one_at_a_time_and_retried_once_at_most(alice, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    hook = hooks.webhook_create(project=project, url="http://127.0.0.1:9/hook", events=["drift.detected"])  # nobody listens
    for _ in range(30):
        response = alice.post(reverse("webhook_test", args=[hook.pk]))
        assert response.status_code == 302
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    page = alice.post(reverse("webhook_test", args=[hook.pk]), follow=True).content.decode()
    assert "is still on its way" in page and WebhookDelivery.objects.filter(webhook=hook).count() == 1
    webhook_delivery.deliver(delivery.pk, 0)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)  # one retry left
    webhook_delivery.deliver(delivery.pk, 1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)  # not the five an event gets
    page = alice.post(reverse("webhook_test", args=[hook.pk]), follow=True).content.decode()
    assert "A test event is on its way" in page and WebhookDelivery.objects.filter(webhook=hook).count() == 2


def test_the_command_prints_a_secret_that_signs_the_deliveries(user, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    out = io.StringIO()
    with Receiver() as receiver:
        call_command("add_webhook", "--user", "alice", "--project", project.name, "--url", receiver.url,
                     "--events", "training.failed, version.published", stdout=out)
        secret = out.getvalue().strip()
        hook = Webhook.objects.get(project=project)
        assert hook.events == ["training.failed", "version.published"] and secret.startswith("whsec_")
        webhook_delivery.deliver(events.send_test(hook).pk, 0)
    [got] = receiver.received
    assert standardwebhooks.Webhook(secret).verify(got.body, got.headers)["data"]["project"]["id"] == project.pk


def test_the_command_refuses_a_private_url_and_unknown_events(user, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(CommandError, match="cannot receive webhooks"):
        call_command("add_webhook", "--user", "alice", "--project", project.name, "--url", "http://127.0.0.1/x")
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(CommandError, match="Unknown event"):
        call_command("add_webhook", "--user", "alice", "--project", project.name, "--url", "http://127.0.0.1/x",
                     "--events", "training.finished,everything")
    with pytest.raises(CommandError, match="no project"):
        call_command("add_webhook", "--user", "alice", "--project", "Nope", "--url", "http://127.0.0.1/x")
    assert not Webhook.objects.exists()
