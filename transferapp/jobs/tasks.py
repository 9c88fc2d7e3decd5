"""django-rq jobs: thin wrappers that load rows by id, call the domain and the engine, record the outcome.

The TrainingRun row is the truth; RQ's own job state is only plumbing.
"""

import logging
import shutil
from itertools import islice
from pathlib import Path

import torch
from django.conf import settings
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from transferapp.engine.config import TrainConfig
from transferapp.engine.features import describe_device, embed, pick_device, precompute
from transferapp.engine.fitting import fit
from transferapp.engine.state import TrainingCancelled
from transferapp.engine.zoo import WeightsUnavailable
from transferapp.jobs import progress, rules, sweeps, tries
from transferapp.labelling import project_map
from transferapp.labelling import ranking as inbox_ranking
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.library import readiness, trash
from transferapp.library.imports import import_entries
from transferapp.library.label_files import labels_for_source
from transferapp.library.trash import deleted_images_purge, project_purge_files
from transferapp.models import (
    BatchPrediction,
    Image,
    ImportJob,
    Project,
    ReadingStudy,
    TrainingRun,
)
from transferapp.reporting import reports as reporting_reports
from transferapp.serving import batch as serving_batch
from transferapp.serving import prediction_log, predictions
from transferapp.storage import blobs
from transferapp.storage.archive import ArchiveRejected, Limits, ZipSource
from transferapp.studies import model_answers
from transferapp.training import snapshot as training_snapshot
from transferapp.webhooks import delivery as webhook_delivery

logger = logging.getLogger(__name__)


def run_training(run_id: int) -> str:
    run = TrainingRun.objects.select_related("project").get(pk=run_id)
    _configure_threads()
    if not tries.claim(run, message="Starting…", **_where_it_runs()):
        return f"run {run_id} was {run.status} before it started"
    heartbeat = tries.Heartbeat(run)
    heartbeat.start()
    snapshot = None
    try:
        snapshot = training_snapshot.take_snapshot(run)
        metrics = _fit_run(run, snapshot)
    except TrainingCancelled:
        progress.finish(run, TrainingRun.Status.CANCELLED, message="Cancelled.")
    except (Untrainable, WeightsUnavailable) as exc:
        progress.finish(run, TrainingRun.Status.FAILED, error=str(exc))
    except Exception as exc:  # the worker must record any failure, then carry on with the next job
        logger.exception("Training run %s failed", run_id)
        progress.finish(run, TrainingRun.Status.FAILED, error=_readable_error(exc))
    else:
        progress.finish(run, TrainingRun.Status.SUCCEEDED, metrics=metrics, message="Done.")
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
        trash.features_forget_unused(sha256s=snapshot.sha256s)
    return run.status


def _where_it_runs() -> dict:
    """The worker's name and the device, for the run page's "Trained on" line."""
    job = get_current_job()
    return {"worker_name": (job.worker_name or "") if job else "", "device": describe_device(pick_device())}


def _configure_threads() -> None:
    if settings.TORCH_THREADS > 0:
        torch.set_num_threads(settings.TORCH_THREADS)


class Untrainable(Exception):
    """The images no longer meet the training rules (deleted between "Train" and the start)."""


def _fit_run(run: TrainingRun, snapshot: "training_snapshot.Snapshot") -> dict:
    groups = readiness.split_groups(project=run.project)  # thumbnails re-read: once per run
    pulled_in = snapshot.hold_out_whole_groups(groups)
    problems = readiness.problems_for_counts(snapshot.counts(), held_out=snapshot.counts(held_out=True))
    if problems:
        raise Untrainable(" ".join(problems))
    samples, test = training_snapshot.with_split_groups(snapshot.trainable(), groups), snapshot.held_out()
    config = TrainConfig.from_dict(run.config)
    train, val, how_split = training_snapshot.split_for_run(run.project, samples, snapshot.given_val, config, groups)
    tries.this_try(run).update(classes=snapshot.classes, n_images=len(snapshot.samples))
    reporter = progress.ProgressReporter(run)
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
        reporter.time_limit.enforce(force=True)  # never publish a model from a run past its limit
        # What the training report cites: the images as this run saw them, versions, hardware.
        # A failure here (a full disk, an uninstalled checkout) must not fail a trained model: the
        # report then rebuilds the manifest from the images and says what was not recorded.
        try:
            reporting_reports.record_provenance(out_dir=out_dir, classes=snapshot.classes, base=config.base,
                                      parts={"train": train, "validation": val, "test": test})
        except Exception:
            logger.exception("Run %s: could not record what the training report cites", run.pk)
        # Before the run is marked succeeded: the web process may then read the model from the bucket.
        blobs.artifact_publish(run)
    if pulled_in:
        how_split += (f" {pulled_in} image(s) related to test images (near-identical, or in the same group) "
                      "were held out with them, so no copy of a test image was trained on.")
    # The validation images by key: the export ships some of them as its parity samples.
    imported = bool(snapshot.given_val) and {s.key for s in val} == snapshot.given_val
    return {**metrics, "split": how_split, "split_imported": imported, "val_keys": [s.key for s in val]}


def _past_the_time_limit() -> int:
    """The job's timeout when it has run that long (rq's alarm went off), else 0."""
    job = get_current_job()
    return job.timeout if job is not None and progress.seconds_past_time_limit() > 0 else 0


def _readable_error(exc: Exception) -> str:
    timed_out = _past_the_time_limit()
    if isinstance(exc, JobTimeoutException) or timed_out:  # rq's alarm, maybe caught and rewrapped on the way
        return rules.time_limit_text(timed_out or None)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "The training ran out of memory. Try a smaller base model or a smaller batch size."
    if isinstance(exc, OSError) and exc.errno == 28:
        return "The server's disk is full. Free some space, then start the training again."
    return f"Training failed: {type(exc).__name__}: {exc}"


def precompute_features(project_id: int, base_model: str) -> int:
    """Embed a project's images in the background so that Train finds them ready."""
    live = Image.all_objects.filter(project_id=project_id, deleted_at__isnull=True)  # the Inbox too (#24)
    names = list(live.order_by("pk").values_list("file", flat=True))
    paths = blobs.media_paths(names)
    if not paths:
        return 0
    _configure_threads()
    try:
        return precompute(paths, base_model, Path(settings.FEATURE_CACHE_DIR), TrainConfig(base=base_model).image_size)
    except WeightsUnavailable:
        return 0  # the training run reports this properly; a warm-up cache job has nothing to add


def inbox_rank(project_id: int) -> str:
    """Retrain the Inbox's quick model and recompute its "label these next" order (#24); the
    features it lacks are embedded first (cached for training too)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return "project gone"
    _configure_threads()
    ranking = inbox_ranking.ranking_refresh(project=project)
    return f"{ranking.status}: {len(ranking.order)} ranked in {ranking.seconds}s"


def map_compute(project_id: int) -> str:
    """The project map's layout (#24 item 7) on the cached features of every live image; images
    not cached yet are embedded here (the same cache Train and the warm-up fill)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return f"project {project_id} was deleted"
    base_model = library_images.feature_base(project)
    size = TrainConfig(base=base_model).image_size
    _configure_threads()
    try:
        row = project_map.map_compute(project, base_model, embed_features=lambda paths, base: embed(
            paths, base, cache_dir=Path(settings.FEATURE_CACHE_DIR), image_size=size))
    except WeightsUnavailable as exc:
        project_map.map_failed(project, str(exc))
        return "weights unavailable"
    except Exception as exc:  # the page says it failed; the worker carries on
        logger.exception("Map of project %s failed", project_id)
        project_map.map_failed(project, f"The map could not be computed: {type(exc).__name__}.")
        return "failed"
    return f"{row.n_points} points in {row.seconds:.1f} s"


def run_import(import_id: int) -> str:
    job = ImportJob.objects.select_related("project").filter(pk=import_id).first()
    if job is None or not tries.claim(job, message=""):
        return f"import {import_id} was {job.status if job else 'deleted'} before it started"
    heartbeat = tries.Heartbeat(job)
    heartbeat.start()
    reporter = progress.ImportReporter(job)
    try:
        with ZipSource(blobs.fetch_upload(job.upload_path), Limits()) as source:
            tries.this_try(job).update(total=len(source))
            # A later try goes on after the files an earlier one reported (the zip's order is fixed);
            # any it stored but had not reported yet count as imported (import_entries).
            summary = import_entries(project=job.project, entries=islice(source, job.processed, None),
                                     on_progress=reporter.report, counts=reporter.counts,
                                     earlier_try_since=job.created_at if job.attempt > 1 else None,
                                     into_inbox=job.into_inbox, labels=labels_for_source(source))
        reporter.report(summary, force=True)
    except progress.ImportStopped:
        pass  # the import (or its whole project) was deleted: nothing to record
    except ArchiveRejected as exc:
        reporter.report_last()
        progress.finish_import(job, ImportJob.Status.FAILED, error=str(exc))
    except Exception as exc:  # what was imported so far stays; the report says where it stopped
        logger.exception("Import %s failed", import_id)
        reporter.report_last()
        progress.finish_import(job, ImportJob.Status.FAILED, error=f"The import stopped: {type(exc).__name__}: {exc}")
    else:
        progress.finish_import(job, ImportJob.Status.DONE)
    finally:
        heartbeat.stop()
        if not ImportJob.objects.filter(pk=job.pk).exclude(attempt=job.attempt).exists():  # no later try reads it
            blobs.discard_upload(job.upload_path)
        library_projects.project_files_remove_if_deleted(project_id=job.project_id)
    return str(import_id)


def run_batch(batch_id: int) -> str:
    """Predict a stored batch into its CSV; the uploaded files are deleted however it ends (unless
    a later try, queued after this one went silent, still needs them)."""
    batch = BatchPrediction.objects.select_related("project", "run").filter(pk=batch_id).first()
    if batch is None or not tries.claim(batch, message=""):
        return f"batch {batch_id} was {batch.status if batch else 'deleted'} before it started"
    _configure_threads()
    heartbeat = tries.Heartbeat(batch)
    heartbeat.start()
    workdir = blobs.job_workdir(batch.folder, batch.attempt)
    try:
        if batch.run is None:
            raise predictions.PredictionError("The model version chosen for this batch was deleted; send the files again.")
        inputs = blobs.fetch_folder(batch.folder, BatchPrediction.INPUTS, workdir)
        total = serving_batch.count_stored(inputs)
        tries.this_try(batch).update(total=total)
        serving_batch.predict_stored(batch.run, inputs, workdir, on_chunk=progress.BatchReporter(batch, total).report,
                                     source=prediction_log.batch(batch.source_name, in_worker=True))
        if not tries.this_try(batch).filter(status=BatchPrediction.Status.RUNNING).exists():
            raise progress.BatchStopped()
        blobs.publish_folder(workdir, batch.folder, [BatchPrediction.THUMBS, BatchPrediction.CSV])
    except progress.BatchStopped:
        pass  # deleted with its project (project_delete removed the folder), or run again
    except predictions.PredictionError as exc:
        progress.finish_batch(batch, BatchPrediction.Status.FAILED, error=str(exc))
    except Exception as exc:  # the worker must record any failure, then carry on with the next job
        logger.exception("Batch prediction %s failed", batch_id)
        progress.finish_batch(batch, BatchPrediction.Status.FAILED, error=f"The batch stopped: {type(exc).__name__}: {exc}")
    else:
        progress.finish_batch(batch, BatchPrediction.Status.DONE, csv_path=f"{batch.folder}/{BatchPrediction.CSV}")
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


def study_model_answers(study_id: int) -> str:
    """The project's current model's answer for each image of a reading study (#26)."""
    study = ReadingStudy.objects.select_related("project").filter(pk=study_id).first()
    if study is None:
        return f"study {study_id} was deleted"
    _configure_threads()
    return f"{model_answers.fill(study)} answers"


def deliver_webhook(delivery_pk: int, attempt: int | None = None) -> str:
    """One try of a webhook delivery (signed, sent, recorded; a failure waits for its retry)."""
    return webhook_delivery.deliver(delivery_pk, attempt)


def drift_sweep() -> int:
    """Every project that predicted today and listens for drift.detected: its week's images against
    its training images, the event sent once a day where they drifted (the reaper enqueues this hourly)."""
    return sweeps.drift_sweep()
