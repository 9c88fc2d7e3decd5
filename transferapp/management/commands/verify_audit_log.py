import csv

from django.core.management.base import BaseCommand, CommandError

from transferapp.audit import trail
from transferapp.storage import csvsafe


class Command(BaseCommand):
    help = ("Check the audit trail's hash chain: exits 0 when every entry is as it was written (and prints "
            "the last entry's hash, to keep outside the database), non-zero naming the first entry that was "
            "changed or follows a deleted one. With --csv FILE, check instead that each row of a project's "
            "downloaded audit log matches its hash (a project's file is part of one chain: it cannot show "
            "that a row is missing).")

    def add_arguments(self, parser):
        parser.add_argument("--csv", dest="csv_path", help="a project's audit log CSV, as downloaded")

    def handle(self, *args, csv_path=None, **options):
        if csv_path:
            self._check_csv(csv_path)
            return
        verdict = trail.verify()
        if verdict.ok:
            # The last hash, kept outside the database (a ticket, a logbook), proves later that
            # nothing was cut off the end, even by someone who could rewrite the head record too.
            self.stdout.write(self.style.SUCCESS(f"{verdict.checked} entries, the chain holds. "
                                                 f"Last hash: {verdict.last_hash}"))
            return
        entry = verdict.broken
        if entry is None:
            raise CommandError(f"The audit log does not hold: {verdict.reason}.")
        raise CommandError(f"The audit log does not hold at entry {entry.pk} "
                           f"({entry.created_at.isoformat()}, {entry.action}): {verdict.reason}. "
                           f"{verdict.checked} entries before it are intact.")

    def _check_csv(self, path: str) -> None:
        try:
            with open(path, newline="", encoding="utf-8") as file:
                rows = list(csv.DictReader(file))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CommandError(f"Could not read {path}: {exc}.") from None
        for number, row in enumerate(rows, start=1):
            cells = {name: csvsafe.shown(value or "") for name, value in row.items() if name}
            if not trail.row_holds(cells):
                raise CommandError(f"Row {number} of {path} (entry {cells.get('id', '?')}) does not match its hash: "
                                   f"it was changed, or the file is not an audit log download.")
        self.stdout.write(self.style.SUCCESS(
            f"{len(rows)} rows, each matches its hash. (This does not show that no row was left out.)"))
