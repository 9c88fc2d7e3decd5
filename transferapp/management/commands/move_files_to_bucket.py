"""Move an installation that kept its files on the disk (local mode) into the bucket: see README,
"Several machines". Run with the bucket settings and the old MEDIA_ROOT / ARTIFACTS_ROOT."""
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from transferapp.models import BatchPrediction, Image, ImportJob, TrainingRun
from transferapp.storage import blobs


class Command(BaseCommand):
    help = ("Upload the files of local mode (images, thumbnails, model folders, unexpired batch predictions, "
            "waiting imports) to the bucket of S3_BUCKET, then point their rows at it. Objects already there "
            "with the same size are skipped, so it can run again; the local files stay where they are.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="say what would be uploaded and rewritten; change nothing")

    def handle(self, *args, dry_run=False, **options):
        if not blobs.s3_mode():
            raise CommandError("S3_BUCKET is not set. Run this with the bucket settings (S3_BUCKET, S3_ENDPOINT_URL, "
                               "S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY) and MEDIA_ROOT / ARTIFACTS_ROOT still "
                               "naming the local files.")
        self.dry_run, self.verbosity, self.failed = dry_run, options.get("verbosity", 1), []
        self.sent, self.present, self.rewritten = [0, 0], [0, 0], dict.fromkeys([TrainingRun, BatchPrediction, ImportJob], 0)
        self.have = {key: size for area in ("projects/", "artifacts/", "batches/", "imports/")
                     for key, size in blobs.object_sizes(area).items()}
        media, artifacts = Path(settings.MEDIA_ROOT), Path(settings.ARTIFACTS_ROOT)

        # Images and thumbnails: their storage names are their keys; no row changes.
        names = Image.all_objects.values_list("file", "thumbnail")  # the trash too: it can be restored
        self.send([(media / name, name) for pair in names for name in pair if name])

        # Under the folder's own name (project-N/run-M, or run-M-try-K): a run queued again still
        # offers its earlier try's quick model, from that try's folder.
        for run in TrainingRun.objects.exclude(artifact_dir="").order_by("pk"):
            if Path(run.artifact_dir).is_absolute():  # a local folder; a prefix is already moved
                local, folder = Path(run.artifact_dir), _found(run.artifact_dir, artifacts, 2)
                if not folder.is_dir() and not (run.status == TrainingRun.Status.SUCCEEDED or run.metrics.get("first_model_ready")):
                    self.rewrite(run, "artifact_dir", "")  # a folder gone with no model in it: nothing to move
                    continue
                self.move_folder(run, "artifact_dir", folder, f"artifacts/{local.parent.name}/{local.name}")
        cutoff = timezone.now() - timedelta(days=settings.BATCH_KEPT_DAYS)  # older ones: the reaper deletes them
        for batch in BatchPrediction.objects.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=cutoff)).order_by("pk"):
            if Path(batch.folder).is_absolute():
                prefix = blobs.folder_record(f"batches/{Path(batch.folder).name}")
                self.move_folder(batch, "folder", _found(batch.folder, media / "batches", 1), prefix,
                                 csv_path=f"{prefix}/{BatchPrediction.CSV}" if batch.csv_path else "")
        # A zip waiting to be imported (a finished import's zip is gone): the job fetches it by key.
        for job in ImportJob.objects.filter(status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING]).exclude(upload_path=""):
            if Path(job.upload_path).is_absolute():
                key, path = f"imports/{Path(job.upload_path).name}", _found(job.upload_path, media / "imports", 1)
                if self.send([(path, key)]):
                    self.rewrite(job, "upload_path", key)

        self.summary()

    def move_folder(self, row, field: str, folder: Path, prefix: str, **also) -> None:
        if not folder.is_dir():
            self.failed.append(f"{row._meta.verbose_name} {row.pk}: its folder {folder} is missing")
            return
        files = blobs.files_to_send(folder)
        if self.send([(path, f"{prefix}/{path.relative_to(folder).as_posix()}") for path in files]):
            self.rewrite(row, field, prefix, **also)

    def send(self, files: list[tuple[Path, str]]) -> bool:
        """Upload those the bucket lacks (the same key with the same size is there already); True
        when all of them are in the bucket."""
        todo, ok = [], True
        for path, key in files:
            try:
                size = path.stat().st_size
            except OSError as exc:
                if key in self.have:  # deleted here after an earlier run moved it
                    self.present[0], self.present[1] = self.present[0] + 1, self.present[1] + self.have[key]
                    continue
                self.failed.append(f"{key}: {path}: {exc.strerror}")
                ok = False
                continue
            if self.have.get(key) == size:
                self.present[0], self.present[1] = self.present[0] + 1, self.present[1] + size
            else:
                todo.append((path, key, size))
        if self.verbosity >= 2:
            for path, key, size in todo:
                self.stdout.write(f"{'would upload' if self.dry_run else 'upload'} {path} -> {key} ({size} bytes)")
        with ThreadPoolExecutor(blobs.FETCH_THREADS) as pool:  # many small files: latency-bound
            errors = list(pool.map(self._upload, todo))
        for (path, key, size), error in zip(todo, errors):
            if error:
                self.failed.append(f"{key}: {path}: {error}")
                ok = False
            else:
                self.sent[0], self.sent[1] = self.sent[0] + 1, self.sent[1] + size
        return ok

    def _upload(self, item) -> str:
        path, key, _ = item
        if self.dry_run:
            return ""
        try:
            blobs.send(path, key)
        except Exception as exc:  # botocore's errors, OSError: listed at the end, the others go on
            return str(exc) or type(exc).__name__
        return ""

    def rewrite(self, row, field: str, record: str, **also) -> None:
        """Only after all of the row's files are in the bucket: one conditional UPDATE, its own
        transaction (a crash leaves the row at its old value or the new one, both with their files)."""
        old = getattr(row, field)
        self.stdout.write(f"{'would point' if self.dry_run else 'pointing'} {row._meta.verbose_name} {row.pk} at "
                          f"{record} (was {old})")
        if not self.dry_run:
            type(row).objects.filter(pk=row.pk, **{field: old}).update(**{field: record}, **also)
        self.rewritten[type(row)] += 1

    def summary(self) -> None:
        verb = ("would upload", "would point") if self.dry_run else ("uploaded", "pointed")
        rows = ", ".join(f"{n} {model._meta.verbose_name_plural}" for model, n in self.rewritten.items())
        self.stdout.write(f"{verb[0].capitalize()} {self.sent[0]} files ({self.sent[1]} bytes); {self.present[0]} files "
                          f"({self.present[1]} bytes) were in the bucket already; {verb[1]} {rows} at the bucket.")
        if self.failed:
            for line in self.failed:
                self.stderr.write(f"FAILED {line}")
            raise CommandError(f"{len(self.failed)} files or folders could not be moved (listed above): the rows they "
                               "belong to still name the local files. Fix them and run the command again.")


def _found(record: str, root: Path, depth: int) -> Path:
    """The recorded local path, or, where the old files are mounted elsewhere now, the same last
    `depth` parts under this machine's root (ARTIFACTS_ROOT/project-N/run-M, MEDIA_ROOT/batches/X)."""
    path = Path(record)
    return path if path.exists() else root.joinpath(*path.parts[-depth:])
