"""A project's webhooks: added (the secret shown once), switched off and on, deleted; their reads."""
from transferapp.models import Project, Webhook, WebhookDelivery
from transferapp.webhooks import targets

MAX_PER_PROJECT = 10
EVENT_WORDS = {
    "training.finished": "a training finished (a new version)",
    "training.failed": "a training failed",
    "version.published": "a version was published",
    "drift.detected": "recent images drifted from the training images",
    "review.needed": "the review queue is long",
}


def webhook_create(*, project: Project, url: str, events: list[str]) -> Webhook:
    """A new webhook (its secret in `.secret`: shown once); targets.UrlRefused when it may not be added."""
    chosen = [event for event in Webhook.EVENTS if event in set(events or [])]
    unknown = sorted(set(events or []) - set(Webhook.EVENTS))
    if unknown:
        raise targets.UrlRefused(f"Unknown event(s): {', '.join(unknown)}. Known: {', '.join(Webhook.EVENTS)}.")
    if not chosen:
        raise targets.UrlRefused("Choose at least one event to send.")
    if project.webhooks.count() >= MAX_PER_PROJECT:
        raise targets.UrlRefused(f"A project has at most {MAX_PER_PROJECT} webhooks; delete one first.")
    url = (url or "").strip()
    targets.check_url(url)
    return Webhook.objects.create(project=project, url=url, events=chosen, secret=targets.new_secret())


def webhook_set_active(*, webhook: Webhook, active: bool) -> Webhook:
    webhook.active = active
    webhook.save(update_fields=["active"])
    return webhook


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()  # its deliveries go with it; a try in flight finds its row gone and records nothing


def webhooks_for_project(*, project: Project) -> list[Webhook]:
    return list(project.webhooks.all())


def deliveries_for_project(*, project: Project, limit: int = 20) -> list[WebhookDelivery]:
    """The delivery log: the latest `limit` deliveries to any of the project's webhooks."""
    return list(WebhookDelivery.objects.filter(webhook__project=project).select_related("webhook")[:limit])
