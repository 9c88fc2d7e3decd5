"""Webhooks added and removed, in the audit trail (#26). The webhooks room is below this one and may
not record itself, so the callers above (the web views, add_webhook) call these in the change's
transaction. A webhook is read, never imported: this room knows only the models."""
from transferapp.audit import trail


def added(webhook) -> None:
    trail.record(action="webhook.added", project=webhook.project,
                 detail={"webhook": webhook.pk, "url": webhook.url, "events": list(webhook.events or [])})


def removed(webhook) -> None:
    trail.record(action="webhook.removed", project=webhook.project, detail={"webhook": webhook.pk, "url": webhook.url})


def switched(webhook) -> None:
    trail.record(action="webhook.switched", project=webhook.project,
                 detail={"webhook": webhook.pk, "url": webhook.url, "on": webhook.active})
