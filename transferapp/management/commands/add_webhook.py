from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from transferapp.audit import webhooks as audit_webhooks
from transferapp.models import Webhook
from transferapp.webhooks import hooks, targets

from ._operator import as_operator
from ._project_arg import add_project_arguments, owned_project


class Command(BaseCommand):
    help = "Add a webhook to one project and print its signing secret (it is shown only this once)."

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--url", required=True, help="the URL that receives the events")
        parser.add_argument("--events", default=",".join(Webhook.EVENTS),
                            help=f"comma-separated events to send (default: all of {', '.join(Webhook.EVENTS)})")

    @as_operator
    def handle(self, *args, user, project, url, events, **options):
        chosen = [event.strip() for event in events.split(",") if event.strip()]
        try:
            with transaction.atomic():
                webhook = hooks.webhook_create(project=owned_project(user, project), url=url, events=chosen)
                audit_webhooks.added(webhook)
        except targets.UrlRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(webhook.secret)
