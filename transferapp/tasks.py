"""django-rq jobs: thin wrappers that load rows by id, call the engine, record the outcome.

The TrainingRun row is the truth; RQ's own job state is only plumbing.
"""
import logging
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone as dt_timezone
from itertools import islice
from pathlib import Path

import torch
from django import db
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample, development_split
from transferapp.engine.features import describe_device, pick_device, precompute
from transferapp.engine.train import TrainingCancelled, fit
from transferapp.engine.zoo import WeightsUnavailable
from transferapp import batch as batches, blobs, grouping, predictions, reports, selectors, services, throttle
from transferapp.archive import ArchiveRejected, Limits, ZipSource
from transferapp.models import BatchPrediction, Image, ImportJob, ImportReportRow, TrainingRun
from transferapp.services import deleted_images_purge, import_entries, project_purge_files

logger = logging.getLogger(__name__)

# Progress rows are written at most this often, so a fast loop does not hammer the database.
PROGRESS_WRITE_INTERVAL_S = 1.0
CANCEL_CHECK_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 20.0


def run_training(run_id: int) -> str:
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    _configure_threads()
    if not _claim(run, message="Starting…", **_where_it_runs()):
        return f"run {run_id} was {run.status} before it started"
    heartbeat = Heartbeat(run)
    heartbeat.start()
    snapshot = None
    try:
        snapshot = _snapshot(run)
        metrics = _fit_run(run, snapshot)
    except TrainingCancelled:
        _finish(run, TrainingRun.Status.CANCELLED, message="Cancelled.")
    except (Untrainable, WeightsUnavailable) as exc:
        _finish(run, TrainingRun.Status.FAILED, error=str(exc))
    except Exception as exc:  # the worker must record any failure, then carry on with the next job
        logger.exception("Training run %s failed", run_id)
        _finish(run, TrainingRun.Status.FAILED, error=_readable_error(exc))
    else:
        _finish(run, TrainingRun.Status.SUCCEEDED, metrics=metrics, message="Done.")
    finally:
        heartbeat.stop()
    if not TrainingRun.objects.filter(pk=run.pk, artifact_dir=blobs.artifact_record(run)).exists():
        # No model of this try is offered (it failed before its quick model, the run was deleted,
        # or a later try took over from it): leave none of its files behind.
        shutil.rmtree(blobs.artifact_workdir(run), ignore_errors=True)
        blobs.remove_stored(blobs.artifact_record(run))
    deleted_images_purge(project_id=run.project_id)  # the trash past its undo window
    project_purge_files(project_id=run.project_id, older_than=run.started_at)  # images deleted while it read them
    if snapshot:
        services.features_forget_unused(sha256s=snapshot.sha256s)
    return run.status


class Heartbeat(threading.Thread):
    """Tells the app this worker is alive, also during long steps that report no progress
    (hashing thousands of files, the stage-1 search, one huge file of an import): a silent
    training run or import is presumed dead."""

    def __init__(self, row: TrainingRun | ImportJob | BatchPrediction, interval_s: float = HEARTBEAT_INTERVAL_S):
        super().__init__(daemon=True)
        self.rows = _this_try(row).filter(status=row.Status.RUNNING)
        self.interval_s, self.stopped = interval_s, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval_s):
                try:
                    self.beat()
                except db.Error:  # the database restarted: beat again next time, on a new connection
                    logger.warning("Heartbeat failed; retrying", exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own database connection

    def beat(self) -> None:
        now = timezone.now()
        if self.rows.model is not TrainingRun:
            self.rows.update(heartbeat_at=now)
            return
        # A run's priced time left is "as of heartbeat_at": moving one without the other made the
        # page's countdown jump back up every beat. Compare-and-set, so a fresher estimate the
        # progress reporter wrote meanwhile is never overwritten (its write was a beat too).
        row = self.rows.values("heartbeat_at", "seconds_left").first()
        if row is None:
            return
        left = row["seconds_left"]
        if left is not None and row["heartbeat_at"] is not None:
            left = max(left - (now - row["heartbeat_at"]).total_seconds(), 0.0)
        self.rows.filter(heartbeat_at=row["heartbeat_at"]).update(heartbeat_at=now, seconds_left=left)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _claim(row: TrainingRun | ImportJob | BatchPrediction, **fields) -> bool:
    """Queued -> running, atomically, so a cancelled, expired or duplicate job does nothing. The
    row's `attempt` is then this worker's try: see _this_try."""
    now = timezone.now()
    claimed = type(row).objects.filter(pk=row.pk, status=row.Status.QUEUED).update(
        status=row.Status.RUNNING, started_at=now, heartbeat_at=now, **fields
    )
    row.refresh_from_db()
    return bool(claimed)


def _this_try(row: TrainingRun | ImportJob | BatchPrediction):
    """The row while it is still at this worker's try. A try the app gave up on (silent too long,
    then queued again: services._rerun_if_silent) may still be alive; it writes nothing more."""
    return type(row).objects.filter(pk=row.pk, attempt=row.attempt)


def _where_it_runs() -> dict:
    """The worker's name and the device, for the run page's "Trained on" line."""
    job = get_current_job()
    return {"worker_name": (job.worker_name or "") if job else "", "device": describe_device(pick_device())}


def _configure_threads() -> None:
    if settings.TORCH_THREADS > 0:
        torch.set_num_threads(settings.TORCH_THREADS)


class Untrainable(Exception):
    """The images no longer meet the training rules (deleted between "Train" and the start)."""


def _fit_run(run: TrainingRun, snapshot: "Snapshot") -> dict:
    groups = selectors.split_groups(project=run.project)  # thumbnails re-read: once per run
    pulled_in = snapshot.hold_out_whole_groups(groups)
    problems = selectors.problems_for_counts(snapshot.counts(), held_out=snapshot.counts(held_out=True))
    if problems:
        raise Untrainable(" ".join(problems))
    samples, test = with_split_groups(snapshot.trainable(), groups), snapshot.held_out()
    config = TrainConfig.from_dict(run.config)
    train, val, how_split = split_for_run(run.project, samples, snapshot.given_val, config, groups)
    _this_try(run).update(classes=snapshot.classes, n_images=len(snapshot.samples))
    reporter = ProgressReporter(run)
    with blobs.training_into(run) as out_dir:  # marked busy until published: no sweep removes it
        metrics = fit(
            train,
            val,
            snapshot.classes,
            config,
            out_dir,
            test=test,
            cache_dir=Path(settings.FEATURE_CACHE_DIR),
            on_progress=reporter.report,
            should_stop=reporter.should_stop,
        )
        # What the training report cites: the images as this run saw them, versions, hardware.
        # A failure here (a full disk, an uninstalled checkout) must not fail a trained model: the
        # report then rebuilds the manifest from the images and says what was not recorded.
        try:
            reports.record_provenance(out_dir=out_dir, classes=snapshot.classes, base=config.base,
                                      parts={"train": train, "validation": val, "test": test})
        except Exception:
            logger.exception("Run %s: could not record what the training report cites", run.pk)
        # Before the run is marked succeeded: the web process may then read the model from the bucket.
        blobs.artifact_publish(run)
    if pulled_in:
        how_split += (f" {pulled_in} image(s) related to test images (near-identical, or in the same group) "
                      "were held out with them, so no copy of a test image was trained on.")
    # The validation images by key: the export ships some of them as its parity samples.
    return {**metrics, "split": how_split, "val_keys": [s.key for s in val]}


@dataclass
class Snapshot:
    """The images and classes as they are when the run starts; later changes belong to the next run."""

    samples: list[Sample]
    classes: list[str]
    given_val: set[str]
    sha256s: set[str]
    test_keys: set[str]  # imported test/ folders or images set aside: only ever scored

    def trainable(self) -> list[Sample]:
        return [s for s in self.samples if s.key not in self.test_keys]

    def held_out(self) -> list[Sample]:
        return [s for s in self.samples if s.key in self.test_keys]

    def hold_out_whole_groups(self, groups: list[list[int]]) -> int:
        """A group (near-identical images, one patient, one folder) with a test image in it is held
        out whole: a copy of a test image in training would make the test figure measure memory.
        Returns how many images were pulled into the test set."""
        before = len(self.test_keys)
        for group in groups:
            keys = {str(pk) for pk in group}
            if keys & self.test_keys:
                self.test_keys |= keys
        return len(self.test_keys) - before

    def counts(self, held_out: bool = False) -> dict[str, int]:
        """Images per class (all of them, or only those held out for testing)."""
        per_label = Counter(s.label for s in (self.held_out() if held_out else self.samples))
        return {name: per_label[i] for i, name in enumerate(self.classes)}


def _snapshot(run: TrainingRun, local: bool = True) -> Snapshot:
    """One query of images joined to their classes, so a class created or emptied meanwhile cannot
    make the rows disagree; the classes are those that have images. Each sample's path is a local
    file (fetched from the bucket in bucket mode), or with `local=False` its storage name."""
    rows = list(Image.objects.filter(project_id=run.project_id).order_by("pk")
                .values_list("pk", "file", "split", "sha256", "label__name"))
    classes = sorted({row[4] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    names = [row[1] for row in rows]
    paths = [str(path) for path in blobs.media_paths(names)] if local else names
    samples = [Sample(path=path, label=index[row[4]], key=str(row[0])) for path, row in zip(paths, rows)]
    given_val = {str(pk) for pk, _, split, _, _ in rows if split == "val"}
    test_keys = {str(pk) for pk, _, split, _, _ in rows if split == "test"}
    return Snapshot(samples, classes, given_val, {row[3] for row in rows}, test_keys)


def split_for_run(project, samples, given_val: set[str], config: TrainConfig, groups: list[list[int]]):
    """(train, val, a sentence saying how the split was made) for the results page; `groups` are
    selectors.split_groups(), kept on one side."""
    train, val = _split(samples, given_val, groups, config)
    if given_val and {s.key for s in val} == given_val:
        broken = selectors.groups_broken_by_imported_split(project=project)
        note = f" {len(broken)} group(s) of related images sit on both sides of it." if broken else ""
        return train, val, "The train/validation split imported with the images was used as given." + note
    if not val:
        return train, val, (f"None: with fewer than {config.small_data_below} images in the smallest class, every image "
                            "trained the model, and each figure is an out-of-fold estimate (every image scored by a "
                            "model that did not train on it).")
    rule = grouping.describe(project.group_by, project.group_folder_level)
    kept = f"{rule} and near-identical images" if rule else "near-identical images"
    how = (f"A stratified split made by the run (seed {config.seed}, {round(config.val_fraction * 100)}% of each class for "
           f"validation) that keeps {kept} on one side.")
    return train, val, how


def _split(samples, given_val: set[str], groups: list[list[int]], config: TrainConfig):
    """An imported train/val split is honoured when every class has images on both sides; otherwise
    the run makes its own stratified split (fixed by the seed) that keeps each group (related
    images, near-duplicates) on one side, so that validation never sees a copy of a training image."""
    val = [s for s in samples if s.key in given_val]
    train = [s for s in samples if s.key not in given_val]
    every_class = {s.label for s in samples}
    if val and {s.label for s in val} == every_class and {s.label for s in train} == every_class:
        return train, val
    return grouped_split(samples, groups, config)


def grouped_split(samples: list[Sample], groups: list[list[int]], config: TrainConfig):
    return development_split(with_split_groups(samples, groups), config)


def with_split_groups(samples: list[Sample], groups: list[list[int]]) -> list[Sample]:
    """The samples tagged with their group (selectors.split_groups(): related images, near-identical
    copies), which the engine keeps whole in its split and in every cross-validation fold."""
    leader = {str(member): str(group[0]) for group in groups if len(group) > 1 for member in group}
    return [replace(s, group=leader[s.key]) if s.key in leader else s for s in samples]


class Every:
    """True at most once per interval (or when forced): keeps fast loops off the database."""

    def __init__(self, interval_s: float):
        self.interval_s, self.last = interval_s, float("-inf")

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


class ProgressReporter:
    """Turns the engine's callbacks into throttled row updates and cancellation checks."""

    def __init__(self, run: TrainingRun):
        self.run, self.rows = run, _this_try(run)
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)
        self.cancel_checks = Every(CANCEL_CHECK_INTERVAL_S)
        self.cancelled = False

    def report(self, progress: dict) -> None:
        epoch_ended = "history" in progress
        if not self.writes.due(force=epoch_ended):
            return
        fields = {
            "heartbeat_at": timezone.now(),
            "progress": float(progress.get("fraction", 0.0)),
            "stage": progress.get("stage", ""),
            "epoch": int(progress.get("epoch") or 0),
            "total_epochs": int(progress.get("total_epochs") or 0),
            "message": str(progress.get("message", ""))[:255],
            "seconds_left": progress.get("seconds_left"),
        }
        if epoch_ended:
            fields["history"] = progress["history"]
        if progress.get("first_model_ready") and self.rows.filter(status=TrainingRun.Status.RUNNING).exists():
            # Stage 1's model is on disk (and in the bucket): the predict page may use it while stage 2 runs.
            blobs.artifact_publish(self.run)
            fields["metrics"] = {"first_model_ready": True, "first_model_accuracy": progress["history"][-1]["val_accuracy"]}
            _offer_this_tries_model(self.run, **fields)
            return
        self.rows.update(**fields)

    def should_stop(self) -> bool:
        """Stop when cancelled, and also when the run was deleted or is no longer ours to run."""
        if not self.cancelled and self.cancel_checks.due():
            still_ours = self.rows.filter(status=TrainingRun.Status.RUNNING, cancel_requested=False)
            self.cancelled = not still_ours.exists()
        return self.cancelled


def _finish(run: TrainingRun, status: str, *, metrics=None, error: str = "", message: str = "") -> None:
    """Record the outcome, unless the run was deleted; a finished model also replaces a
    "failed" that the app wrote when it lost patience with a slow worker."""
    fields = {"status": status, "finished_at": timezone.now(), "heartbeat_at": timezone.now(), "error": error}
    if metrics is not None:
        fields.update(metrics=metrics, history=metrics.get("history", []), progress=1.0)
    if message:
        fields["message"] = message
    allowed = [TrainingRun.Status.RUNNING] + ([TrainingRun.Status.FAILED] if status == TrainingRun.Status.SUCCEEDED else [])
    if status == TrainingRun.Status.SUCCEEDED:
        _offer_this_tries_model(run, among=allowed, **fields)
    else:
        _this_try(run).filter(status__in=allowed).update(**fields)
    run.status = TrainingRun.objects.filter(pk=run.pk).values_list("status", flat=True).first() or "deleted"
    if run.status == TrainingRun.Status.SUCCEEDED:
        run.version = services.run_assign_version(run_id=run.pk)


def _offer_this_tries_model(run: TrainingRun, among=(TrainingRun.Status.RUNNING,), **fields) -> None:
    """Point the run at this try's model folder (with `fields`), while the row is at this try; an
    earlier try's folder, offered until now (its quick model), goes."""
    rows = _this_try(run).filter(status__in=among)
    earlier = rows.values_list("artifact_dir", flat=True).first()
    if rows.update(artifact_dir=blobs.artifact_record(run), **fields) and earlier and earlier != blobs.artifact_record(run):
        try:  # best effort: a bucket that hiccups must not undo a recorded outcome (the version comes next)
            blobs.remove_stored(earlier)
        except Exception:
            logger.exception("Run %s: could not remove its earlier try's model folder %s", run.pk, earlier)


def _past_the_time_limit() -> int:
    """The job's timeout when it has run that long (rq's alarm went off), else 0."""
    job = get_current_job()
    if job is None or not job.timeout or job.timeout < 0 or job.started_at is None:
        return 0
    ran_s = (datetime.now(dt_timezone.utc).replace(tzinfo=None) - job.started_at.replace(tzinfo=None)).total_seconds()
    return job.timeout if ran_s >= job.timeout else 0


def _readable_error(exc: Exception) -> str:
    timed_out = _past_the_time_limit()
    if isinstance(exc, JobTimeoutException) or timed_out:  # rq's alarm, maybe caught and rewrapped on the way
        return services.time_limit_text(timed_out or None)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "The training ran out of memory. Try a smaller base model or a smaller batch size."
    if isinstance(exc, OSError) and exc.errno == 28:
        return "The server's disk is full. Free some space, then start the training again."
    return f"Training failed: {type(exc).__name__}: {exc}"


def precompute_features(project_id: int, base_model: str) -> int:
    """Embed a project's images in the background so that Train finds them ready."""
    names = list(Image.objects.filter(project_id=project_id).order_by("pk").values_list("file", flat=True))
    paths = blobs.media_paths(names)
    if not paths:
        return 0
    _configure_threads()
    try:
        return precompute(paths, base_model, Path(settings.FEATURE_CACHE_DIR), TrainConfig(base=base_model).image_size)
    except WeightsUnavailable:
        return 0  # the training run reports this properly; a warm-up cache job has nothing to add


def run_import(import_id: int) -> str:
    job = ImportJob.objects.select_related("project").filter(pk=import_id).first()
    if job is None or not _claim(job, message=""):
        return f"import {import_id} was {job.status if job else 'deleted'} before it started"
    heartbeat = Heartbeat(job)
    heartbeat.start()
    reporter = ImportReporter(job)
    try:
        with ZipSource(blobs.fetch_upload(job.upload_path), Limits()) as source:
            _this_try(job).update(total=len(source))
            # A later try goes on after the files an earlier one reported (the zip's order is fixed);
            # any it stored but had not reported yet count as imported (import_entries).
            summary = import_entries(project=job.project, entries=islice(source, job.processed, None),
                                     on_progress=reporter.report, counts=reporter.counts,
                                     earlier_try_since=job.created_at if job.attempt > 1 else None)
        reporter.report(summary, force=True)
    except ImportStopped:
        pass  # the import (or its whole project) was deleted: nothing to record
    except ArchiveRejected as exc:
        reporter.report_last()
        _finish_import(job, ImportJob.Status.FAILED, error=str(exc))
    except Exception as exc:  # what was imported so far stays; the report says where it stopped
        logger.exception("Import %s failed", import_id)
        reporter.report_last()
        _finish_import(job, ImportJob.Status.FAILED, error=f"The import stopped: {type(exc).__name__}: {exc}")
    else:
        _finish_import(job, ImportJob.Status.DONE)
    finally:
        heartbeat.stop()
        if not ImportJob.objects.filter(pk=job.pk).exclude(attempt=job.attempt).exists():  # no later try reads it
            blobs.discard_upload(job.upload_path)
        services.project_files_remove_if_deleted(project_id=job.project_id)
    return str(import_id)


class ImportStopped(Exception):
    """The import's row is gone (deleted with its project): storing more files would orphan them."""


class ImportReporter:
    """Appends the new lines of the per-file report and the counts, at most once a second; checks
    before every next file that the import still exists (and is still at this try)."""

    def __init__(self, job: ImportJob):
        self.import_id, self.rows = job.pk, _this_try(job)
        self.counts = {"accepted": job.accepted, "skipped": job.skipped, "junk": job.junk}  # an earlier try's
        self.writes = Every(PROGRESS_WRITE_INTERVAL_S)
        self.rows_written = 0
        self.last = None  # the summary of every file handled so far, reported or not yet

    def report(self, summary: dict, force: bool = False) -> None:
        self.last = summary
        if not self.rows.exists():
            raise ImportStopped()
        if not self.writes.due(force=force):
            return
        new_rows = summary["report"][self.rows_written:]
        # The report's rows and the counts a later try goes on from, together, and only while this
        # try is current (the update takes the row's lock: a reaper queueing the next try waits).
        with transaction.atomic():
            if not self.rows.update(processed=summary["accepted"] + summary["skipped"] + summary["junk"],
                                    accepted=summary["accepted"], skipped=summary["skipped"], junk=summary["junk"],
                                    heartbeat_at=timezone.now()):
                raise ImportStopped()
            ImportReportRow.objects.bulk_create(
                [ImportReportRow(job_id=self.import_id, name=row["name"][:500], label=(row["label"] or "")[:255],
                                 ok=row["ok"], reason=row["reason"]) for row in new_rows],
                batch_size=500,
            )
        self.rows_written += len(new_rows)

    def report_last(self) -> None:
        """On the way out of a failed import: the counts and report lines of every file handled,
        also those of the last second (a failed import's page says what it stored)."""
        if self.last is None:
            return
        try:
            self.report(self.last, force=True)
        except ImportStopped:
            pass  # deleted meanwhile, or a later try took over: nothing of this try to record


def _finish_import(job: ImportJob, status: str, error: str = "") -> None:
    """Record the outcome; an import that completes also replaces a "failed" written when the
    app lost patience with a slow worker (as a finished training does)."""
    allowed = [ImportJob.Status.RUNNING] + ([ImportJob.Status.FAILED] if status == ImportJob.Status.DONE else [])
    _this_try(job).filter(status__in=allowed).update(status=status, error=error, message="", finished_at=timezone.now())


def run_batch(batch_id: int) -> str:
    """Predict a stored batch into its CSV; the uploaded files are deleted however it ends (unless
    a later try, queued after this one went silent, still needs them)."""
    batch = BatchPrediction.objects.select_related("project", "run").filter(pk=batch_id).first()
    if batch is None or not _claim(batch, message=""):
        return f"batch {batch_id} was {batch.status if batch else 'deleted'} before it started"
    _configure_threads()
    heartbeat = Heartbeat(batch)
    heartbeat.start()
    workdir = blobs.job_workdir(batch.folder, batch.attempt)
    try:
        if batch.run is None:
            raise predictions.PredictionError("The model version chosen for this batch was deleted; send the files again.")
        inputs = blobs.fetch_folder(batch.folder, BatchPrediction.INPUTS, workdir)
        total = batches.count_stored(inputs)
        _this_try(batch).update(total=total)
        batches.predict_stored(batch.run, inputs, workdir, on_chunk=BatchReporter(batch, total).report)
        if not _this_try(batch).filter(status=BatchPrediction.Status.RUNNING).exists():
            raise BatchStopped()
        blobs.publish_folder(workdir, batch.folder, [BatchPrediction.THUMBS, BatchPrediction.CSV])
    except BatchStopped:
        pass  # deleted with its project (project_delete removed the folder), or run again
    except predictions.PredictionError as exc:
        _finish_batch(batch, BatchPrediction.Status.FAILED, error=str(exc))
    except Exception as exc:  # the worker must record any failure, then carry on with the next job
        logger.exception("Batch prediction %s failed", batch_id)
        _finish_batch(batch, BatchPrediction.Status.FAILED, error=f"The batch stopped: {type(exc).__name__}: {exc}")
    else:
        _finish_batch(batch, BatchPrediction.Status.DONE, csv_path=f"{batch.folder}/{BatchPrediction.CSV}")
    finally:
        heartbeat.stop()
        _batch_clean_up(batch, workdir)
    return str(batch_id)


def _batch_clean_up(batch: BatchPrediction, workdir: Path) -> None:
    """This try's work copy goes; the inputs go once the batch has ended, and everything once it is
    gone (deleted with its project while this try still wrote)."""
    if blobs.in_bucket(batch.folder):  # a work copy (a folder recorded on the disk is the batch's own)
        shutil.rmtree(workdir, ignore_errors=True)
    status = BatchPrediction.objects.filter(pk=batch.pk).values_list("status", flat=True).first()
    if status is None:
        blobs.remove_stored(batch.folder)
    elif status not in (BatchPrediction.Status.QUEUED, BatchPrediction.Status.RUNNING):
        blobs.remove_stored(batch.folder, BatchPrediction.INPUTS)


class BatchStopped(Exception):
    """The batch's row is gone (its project was deleted), or no longer at this try."""


class BatchReporter:
    """After each chunk: records progress, counts the images against the owner's prediction
    allowance (the same one the predict page uses) and, when it is used up, waits for the next
    minute's instead of refusing the rest of the batch."""

    WAIT_STEP_S = 1.0

    def __init__(self, batch: BatchPrediction, total: int):
        self.rows, self.total = _this_try(batch), total
        self.owner = str(batch.project.owner_id)
        self.allowance = throttle.predictions_per_user()
        self.counted_before, self.seen = batch.counted, 0  # by earlier tries; images of this try so far

    def report(self, done: int, refused: int, images: int) -> None:
        self.seen += images
        # An earlier try (its worker died) predicted the same images first: count only those past it.
        uncounted = self.seen - max(self.counted_before, self.seen - images)
        if not self.rows.update(done=done, refused=refused, heartbeat_at=timezone.now(),
                                counted=max(self.counted_before, self.seen)):
            raise BatchStopped()
        if uncounted > 0:
            self.allowance.hit(self.owner, uncounted)
        if done < self.total and self.allowance.exceeded(self.owner):
            self.rows.update(message=f"Paused: {self.allowance.limit} predictions a minute are allowed; "
                                     "it goes on within a minute.")
            while self.allowance.exceeded(self.owner):
                time.sleep(self.WAIT_STEP_S)
            self.rows.update(message="")


def _finish_batch(batch: BatchPrediction, status: str, *, error: str = "", csv_path: str = "") -> None:
    """Record the outcome; a batch that completes also replaces a "failed" written when the app lost
    patience with a slow worker (as a finished import does)."""
    allowed = [BatchPrediction.Status.RUNNING] + ([BatchPrediction.Status.FAILED] if status == BatchPrediction.Status.DONE else [])
    _this_try(batch).filter(status__in=allowed).update(
        status=status, error=error, csv_path=csv_path, message="", finished_at=timezone.now())
