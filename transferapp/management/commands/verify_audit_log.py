from django.core.management.base import BaseCommand, CommandError

from transferapp.audit import trail


class Command(BaseCommand):
    help = ("Check the audit trail's hash chain: exits 0 when every entry is as it was written, "
            "non-zero naming the first entry that was changed or follows a deleted one.")

    def handle(self, *args, **options):
        verdict = trail.verify()
        if verdict.ok:
            self.stdout.write(self.style.SUCCESS(f"{verdict.checked} entries, the chain holds."))
            return
        entry = verdict.broken
        raise CommandError(f"The audit log does not hold at entry {entry.pk} "
                           f"({entry.created_at.isoformat()}, {entry.action}): {verdict.reason}. "
                           f"{verdict.checked} entries before it are intact.")
