from django.core.management.base import BaseCommand, CommandError

from transferapp.engine.zoo import WeightsUnavailable, fetch_weights, list_bases


class Command(BaseCommand):
    help = "Download a base model's pretrained weights (needs internet), so training works offline later."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="base model names; none lists them")

    def handle(self, *args, names, **options):
        if not names:
            for base in list_bases():
                state = "available" if base.weights_available else "not downloaded"
                self.stdout.write(f"{base.name:24} {state}")
            return
        for name in names:
            try:
                path = fetch_weights(name)
            except (ValueError, WeightsUnavailable) as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(self.style.SUCCESS(f"{name}: {path}"))
