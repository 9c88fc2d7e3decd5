"""The project's webhooks page: the list, add one (its secret shown once), switch off or on, delete,
send a test event, and the delivery log. Editors and the owner only (#26): a stranger gets a 404, a lower role a 403.
Every change is a POST with the CSRF token."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from transferapp.accounts import roles
from transferapp.accounts import selectors as accounts_selectors
from transferapp.audit import webhooks as audit_webhooks
from transferapp.library import selectors as library_selectors
from transferapp.models import Webhook
from transferapp.webhooks import events as webhook_events
from transferapp.webhooks import hooks, targets


def _page(request, project, *, status=200, url="", chosen=None, error=""):
    deliveries = hooks.deliveries_for_project(project=project)
    context = {
        "project": project,
        "webhooks": hooks.webhooks_for_project(project=project),
        "deliveries": deliveries,
        "pending": any(delivery.status == "pending" for delivery in deliveries),
        "event_choices": [(event, hooks.EVENT_WORDS.get(event, event)) for event in Webhook.EVENTS],
        "chosen": set(Webhook.EVENTS if chosen is None else chosen),
        "url": url,
        "error": error,
    }
    if request.GET.get("log") and request.htmx:  # the log's own refresh while a delivery is pending
        return render(request, "transferapp/_webhook_log.html", context)
    return render(request, "transferapp/webhooks.html", context, status=status)


@login_required
def webhooks_page(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    return _page(request, project)


@login_required
@require_POST
def webhook_create(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    url, chosen = request.POST.get("url", ""), request.POST.getlist("events")
    try:
        with transaction.atomic():
            webhook = hooks.webhook_create(project=project, url=url, events=chosen)
            audit_webhooks.added(webhook)
    except targets.UrlRefused as exc:
        return _page(request, project, status=400, url=url, chosen=chosen, error=str(exc))
    # Shown on this one response only, like a new API key.
    response = render(request, "transferapp/webhook_created.html", {"project": project, "webhook": webhook})
    response["Cache-Control"] = "no-store"  # the secret must not stay in a cache or the history
    return response


@login_required
@require_POST
def webhook_toggle(request, pk):
    webhook = accounts_selectors.webhook_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    with transaction.atomic():
        hooks.webhook_set_active(webhook=webhook, active=not webhook.active)
        audit_webhooks.switched(webhook)
    messages.success(request, f"Webhook to {webhook.url} switched {'on' if webhook.active else 'off'}.")
    return redirect(reverse("webhooks_page", args=[webhook.project_id]))


@login_required
@require_POST
def webhook_delete(request, pk):
    webhook = accounts_selectors.webhook_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    with transaction.atomic():
        audit_webhooks.removed(webhook)
        hooks.webhook_delete(webhook=webhook)
    messages.success(request, f"Webhook to {webhook.url} deleted: it receives no more events.")
    return redirect(reverse("webhooks_page", args=[webhook.project_id]))


@login_required
@require_POST
def webhook_test(request, pk):
    webhook = accounts_selectors.webhook_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    if webhook_events.send_test(webhook) is None:
        messages.info(request, f"A test event to {webhook.url} is still on its way; the delivery log below shows "
                               "its answer. Send another once it has one.")
    else:
        messages.success(request, f"A test event is on its way to {webhook.url}; the delivery log below shows the answer.")
    return redirect(reverse("webhooks_page", args=[webhook.project_id]) + "#delivery-log")
