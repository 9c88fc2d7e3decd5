"""The prediction log (#25): every prediction a published model makes, from the predict page, an API
key or a batch, is one Prediction row: what it answered, how sure, how unlike the training images,
the model's features (for drift) and, when the project keeps them, a small JPEG for review.

Logging must cost a prediction almost nothing: the rows of one request (or one batch chunk) go in
with one bulk_create; the kept image, a resize and a JPEG encoding, is written by a small thread
pool off the request path (the worker, whose work horse exits with its job, writes it at once).
The row never depends on the image: one whose image could not be written keeps no image.
"""
import logging
import random
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from transferapp.library import intake, reviews
from transferapp.models import Prediction, Project, TrainingRun, prediction_image_path
from transferapp.storage import blobs
from transferapp.webhooks import events

logger = logging.getLogger(__name__)

IMAGE_THREADS = 1  # one writer: the CPUs answer predictions; one thread also never races itself on a name
IMAGE_BACKLOG = 64  # past this many images waiting, a request writes its own (bounded memory, back-pressure)
JPEG_QUALITY = 85
LIST_MAX = 1000  # rows one API listing returns at most


@dataclass(frozen=True)
class Source:
    """Where predictions came from: Prediction.Source plus its name (the API key's, the batch's file)."""
    kind: str
    name: str = ""
    images_in_background: bool = True  # False in the worker: its work horse exits with the job


def page() -> Source:
    return Source(Prediction.Source.PAGE)


def api(caller, *, user=None) -> Source:
    """A project key's name (else its prefix); a personal token's (#26) with its user's name first,
    "ada (laptop)", so the log says who asked."""
    name = caller.name or caller.prefix
    return Source(Prediction.Source.API, (f"{user.get_username()} ({name})" if user is not None else name)[:120])


def batch(name: str, *, in_worker: bool = False) -> Source:
    return Source(Prediction.Source.BATCH, (name or "")[:120], images_in_background=not in_worker)


@dataclass
class Answer:
    """One predicted image for the log: its name, the checked image, the engine's result (with
    "features" and "novelty") after the run's threshold, and whether the model learnt from it."""
    name: str
    checked: "intake.CheckedImage"
    result: dict
    seen_in_training: bool = False


def enabled() -> bool:
    return settings.PREDICTION_LOG


def record(run: TrainingRun, source: Source, answers: list[Answer]) -> list[int | None]:
    """Log `answers` (one bulk insert) and return their Prediction ids, in order (None each when
    PREDICTION_LOG is off). Then the kept images are written and review.needed sent if the review
    queue just reached REVIEW_NEEDED_AT."""
    if not answers or not enabled():
        return [None] * len(answers)
    project = run.project
    now = timezone.now()
    share = project.audit_percent / 100
    # an image the model learnt from is never drawn into the audit sample: live accuracy would count it
    rows = [_row(project, run, source, answer, now, not answer.seen_in_training and random.random() < share)
            for answer in answers]
    keep = project.keep_prediction_images
    for row in rows:
        if keep:  # named now (by project, day and content): the row needs no second write when it lands
            row.image.name = prediction_image_path(row, "")
    with _without_waiting_for_the_disk():
        Prediction.objects.bulk_create(rows)
    if keep:
        _keep_images(rows, [answer.checked.rgb for answer in answers], source.images_in_background)
    if any(reviews.in_queue(row) for row in rows):
        _announce_review_needed(project, rows)
    return [row.pk for row in rows]


@contextmanager
def _without_waiting_for_the_disk():
    """The log's insert commits without waiting for the disk to confirm it (measured: the wait, one
    fsync, was 4 ms of a 4.5 ms insert on a busy machine; the limit is 2 ms a prediction). SQLite's
    WAL with synchronous=NORMAL, PostgreSQL's synchronous_commit=off: a power cut (not a crash of
    the app) may lose the last moments' log rows, never corrupt or half-write anything, and the next
    ordinary commit makes them durable too. Inside a caller's transaction, its commit decides."""
    if connection.in_atomic_block or connection.vendor not in ("sqlite", "postgresql"):
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (before,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous = {int(before)}")


def _row(project: Project, run: TrainingRun, source: Source, answer: Answer, now, audit: bool) -> Prediction:
    result = answer.result
    top = result["top"]
    return Prediction(
        project=project, run=run, version=run.version or 0, created_at=now, source=source.kind,
        source_name=source.name, file_name=(answer.name or "")[:255], sha256=answer.checked.sha256,
        top_label=top[:80], probability=float(result["probabilities"][top]),
        prediction_set=list(result.get("prediction_set", [top])), abstained=bool(result.get("abstained", False)),
        unfamiliar=bool(result.get("unfamiliar", False)), novelty=result.get("novelty"),
        seen_in_training=answer.seen_in_training, features=result.get("features"), audit=audit)


# --- reading the log, feedback -------------------------------------------------------------------

def predictions_list(*, project: Project, since=None, limit: int = 100) -> list[Prediction]:
    """The project's log, newest first: at most `limit` rows, only those after `since` when given."""
    rows = Prediction.objects.filter(project=project)
    if since is not None:
        rows = rows.filter(created_at__gt=since)
    return list(rows.order_by("-created_at", "-pk")[:max(1, min(limit, LIST_MAX))])


def prediction_get(*, pk: int, project_id: int) -> Prediction | None:
    """A logged prediction of this project (None for another project's: the caller's 404)."""
    return Prediction.objects.select_related("project").filter(pk=pk, project_id=project_id).first()


def feedback_record(*, prediction: Prediction, label: str, by=None) -> Prediction:
    """The true class from the client's own system (the feedback API): a review like the queue's
    (`by`: the personal token's user; None for a project key, which is no one's)."""
    return reviews.review_record(prediction=prediction, label=label, by=by, source=Prediction.ReviewSource.API)


# --- the kept images -----------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_pending: set[Future] = set()


def _keep_images(rows: list[Prediction], images: list, in_background: bool) -> None:
    work = list(zip([row.pk for row in rows], [row.image.name for row in rows], images))
    if not in_background or len(_pending) >= IMAGE_BACKLOG:
        _write_images(work, in_thread=False)
        return
    future = _executor().submit(_write_images, work, True)
    _pending.add(future)
    future.add_done_callback(_pending.discard)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="prediction-images")
        return _pool


def flush(timeout_s: float = 60) -> None:
    """Wait until the images handed to the pool are written (tests, a clean shutdown)."""
    for future in list(_pending):
        future.result(timeout=timeout_s)


def _write_images(work: list[tuple[int, str, object]], in_thread: bool) -> None:
    try:
        written = set()
        for pk, name, rgb in work:
            if name in written:
                continue  # the same image twice in one request: one file
            try:
                _write_image(name, rgb)
                written.add(name)
            except Exception:  # a full disk or an unreachable bucket costs the image, never the row
                logger.exception("Could not keep the image of prediction %s", pk)
                _forget_image(pk, name)
    finally:
        if in_thread:
            close_old_connections()


def _write_image(name: str, rgb) -> None:
    """The small JPEG under its name; one already there is the same content (named by its hash) and stays."""
    if default_storage.exists(name):
        return
    jpeg = intake.jpeg_thumbnail(rgb, settings.PREDICTION_IMAGE_MAX_SIDE, quality=JPEG_QUALITY)
    saved = default_storage.save(name, ContentFile(jpeg))
    if saved != name:  # another process wrote it a moment ago; the storage renamed this copy
        default_storage.delete(saved)


def _forget_image(pk: int, name: str) -> None:
    try:
        Prediction.objects.filter(pk=pk, image=name).update(image="")
    except Exception:
        logger.exception("Could not clear the missing image of prediction %s", pk)


# --- review.needed --------------------------------------------------------------------------------

def _announce_review_needed(project: Project, rows: list[Prediction]) -> None:
    """review.needed once, when the review queue (the page's: library.reviews.queue_size) reaches
    REVIEW_NEEDED_AT: counted up to the first and the last new row, so of two requests logging at
    once only the one whose row crossed it sends it."""
    threshold = settings.REVIEW_NEEDED_AT
    if threshold <= 0 or not any("review.needed" in hook.events for hook in project.webhooks.filter(active=True)):
        return  # nobody listens: no count on every prediction
    first, last = min(row.pk for row in rows), max(row.pk for row in rows)
    counts = reviews.queue_all(project).aggregate(before=Count("pk", filter=Q(pk__lt=first)),
                                                  through=Count("pk", filter=Q(pk__lte=last)))
    if counts["before"] < threshold <= counts["through"]:
        events.emit(project, "review.needed", {"queue": counts["through"], "threshold": threshold})


# --- retention ----------------------------------------------------------------------------------

def predictions_purge_expired(now=None) -> dict:
    """Rows older than PREDICTION_LOG_KEPT_DAYS go; kept images older than PREDICTION_IMAGES_KEPT_DAYS
    go, and past PREDICTION_IMAGES_MAX_MB per project the oldest go first. Returns the counts."""
    now = now or timezone.now()
    names: set[str] = set()
    old_rows = Prediction.objects.filter(created_at__lt=now - timedelta(days=settings.PREDICTION_LOG_KEPT_DAYS))
    names.update(old_rows.exclude(image="").values_list("image", flat=True))
    rows_gone, _ = old_rows.delete()
    old_images = Prediction.objects.filter(created_at__lt=now - timedelta(days=settings.PREDICTION_IMAGES_KEPT_DAYS)).exclude(image="")
    names.update(old_images.values_list("image", flat=True))
    images_gone = old_images.update(image="")
    for project_id in Prediction.objects.exclude(image="").values_list("project_id", flat=True).distinct():
        cleared, over_cap = _trim_to_cap(project_id)
        images_gone += cleared
        names.update(over_cap)
    files_gone = _remove_unreferenced(names)
    return {"rows": rows_gone, "images": images_gone, "files": files_gone}


def _trim_to_cap(project_id: int) -> tuple[int, set[str]]:
    """Clear the oldest kept images of a project until its files fit PREDICTION_IMAGES_MAX_MB."""
    cap = settings.PREDICTION_IMAGES_MAX_MB * 1024 * 1024
    kept = Prediction.objects.filter(project_id=project_id).exclude(image="").order_by("created_at", "pk")
    named = set(kept.values_list("image", flat=True))  # a file no row names is not the project's to count
    sizes = {name: size for name, size in blobs.media_sizes(f"projects/{project_id}/predictions/").items() if name in named}
    total = sum(sizes.values())
    if total <= cap:
        return 0, set()
    names: list[str] = []
    for name in kept.values_list("image", flat=True).iterator():
        if total <= cap:
            break
        if name not in sizes:
            continue  # counted once (rows of one day share a file), or never written
        names.append(name)
        total -= sizes.pop(name)
    cleared = 0
    for start in range(0, len(names), 500):  # every row that shares a file lets it go at once
        cleared += kept.filter(image__in=names[start:start + 500]).update(image="")
    return cleared, set(names)


def _remove_unreferenced(names: set[str]) -> int:
    """Remove the files no row names any more (one file serves a project's same image of one day)."""
    names = sorted(names)
    still = set()
    for start in range(0, len(names), 500):
        still.update(Prediction.objects.filter(image__in=names[start:start + 500]).values_list("image", flat=True))
    removed = 0
    for name in names:
        if name in still:
            continue
        try:
            default_storage.delete(name)
            removed += 1
        except Exception:  # an unreachable bucket: the file stays, unreferenced, until the next sweep finds nothing
            logger.exception("Could not remove the kept prediction image %s", name)
    return removed
