"""The Inbox's "label these next" order (#24): the quick model (a head on cached features) trained on
the project's labelled images scores its Inbox; engine.active.rank_pool orders it and says why each
image is asked; the result, with the honest estimate and the plateau verdict, is kept in the
project's InboxRanking. Computed in the worker (jobs.tasks.inbox_rank), read by the labelling page
and the API."""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import django_rq
import numpy as np
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from transferapp.engine import active
from transferapp.engine.config import TrainConfig
from transferapp.engine.features import cached_rows, embed
from transferapp.engine.zoo import create_backbone
from transferapp.library import images as library_images
from transferapp.library import selectors as library_selectors
from transferapp.models import Image, InboxRanking, Project
from transferapp.storage import blobs

logger = logging.getLogger(__name__)

KIND_NAMES = {active.UNSURE: "unsure", active.NOVEL: "cold", active.RANDOM: "random"}
REASON_RANDOM = "picked at random, to keep the estimate honest"
REASON_NEW = "arrived after the last ranking"
# An "unsure" pick the model gives this much or more: the order ran past the images it doubts, and
# "unsure between A and B" beside "A (97%)" would contradict itself.
SURE = 0.9
REASON_SURE_CHECK = "a check: the model is fairly sure of this one"
ERROR_SHOWN = "The order could not be computed this time; it will be tried again after the next labels."
# Fewer random picks than this labelled and the estimate's interval is too wide to show.
MIN_RANDOM_FOR_ESTIMATE = 5
HISTORY_KEPT = 20
JOB_TIMEOUT_S = 600


# --- features -----------------------------------------------------------------------------------

def project_base(project: Project) -> str:
    """The base whose features the quick model uses: the same as the warm-up's and the map's."""
    return library_images.feature_base(project)


@functools.lru_cache(maxsize=2)
def _backbone(base: str):
    # Loaded once a process: a page asking for cached features should not reload the weights.
    return create_backbone(base, image_size=TrainConfig(base=base).image_size)


def cached_features_of(images: list[Image], base: str) -> tuple[list[Image], np.ndarray]:
    """The images whose features are cached, and those features in the same order; read from the
    cache only (no backbone, no forward pass): for the web process. Images not yet cached are left
    out (the worker caches each image on arrival)."""
    rows = cached_rows(Path(settings.FEATURE_CACHE_DIR), base, [image.sha256 for image in images])
    kept = [image for image in images if image.sha256 in rows]
    if not kept:
        return [], np.zeros((0, 0), dtype=np.float32)
    return kept, np.stack([rows[image.sha256] for image in kept]).astype(np.float32)


def features_of(images: list[Image], base: str) -> np.ndarray:
    """Cached features of these images, in order (missing ones are computed and cached)."""
    if not images:
        return np.zeros((0, _backbone(base).feature_dim), dtype=np.float32)
    paths = blobs.media_paths([image.file.name for image in images])
    return embed(paths, _backbone(base), cache_dir=Path(settings.FEATURE_CACHE_DIR))


# --- the ranking --------------------------------------------------------------------------------

def ranking_for(project: Project) -> InboxRanking:
    return InboxRanking.objects.get_or_create(project=project)[0]


def ranking_refresh(*, project: Project) -> InboxRanking:
    """Retrain the quick model and rank the whole Inbox; the row says how long it took."""
    started = time.monotonic()
    ranking = ranking_for(project)
    ranking.status = InboxRanking.Status.RUNNING
    ranking.save(update_fields=["status"])
    try:
        _compute(project, ranking)
    except Exception:  # the page shows a plain sentence; the worker's log keeps the detail
        logger.exception("Inbox ranking failed for project %s", project.pk)
        ranking.status, ranking.error = InboxRanking.Status.FAILED, ERROR_SHOWN
        ranking.save(update_fields=["status", "error"])
        return ranking
    ranking.status, ranking.error, ranking.computed_at = InboxRanking.Status.IDLE, "", timezone.now()
    ranking.seconds = round(time.monotonic() - started, 3)
    ranking.save()
    return ranking


def quick_model_images(project: Project):
    """The labelled images the quick model trains on: test images are held out of every run, so
    of this one too (labels_at counts these, so setting one aside retrains it)."""
    return Image.objects.filter(project=project).exclude(split="test")


def _compute(project: Project, ranking: InboxRanking) -> None:
    classes = library_selectors.project_class_order(project=project)
    labelled = list(quick_model_images(project).select_related("label").order_by("pk"))
    pool = list(Image.inbox.filter(project=project).order_by("pk"))
    ranking.labels_at = len(labelled)
    ranking.estimate = estimate_for(project)
    if not pool:
        ranking.order, ranking.cards = [], {}
        return
    base = project_base(project)
    x_pool = features_of(pool, base)
    x_lab = features_of(labelled, base)
    y_lab = np.array([classes.index(i.label.name) for i in labelled], dtype=np.int64)
    result = active.rank_pool(x_lab, y_lab, x_pool, len(classes), n=None, classes=classes, seed=len(labelled))
    ranking.cards = {str(pool[p.index].pk): _card(p, classes) for p in result.picks}
    unsure = {image.pk for image in pool if image.inbox_unsure}
    picked = [pool[p.index].pk for p in result.picks]
    ranking.order = [pk for pk in picked if pk not in unsure] + [pk for pk in picked if pk in unsure]
    _record_history(ranking, result, pool, classes)


def _card(pick: active.Pick, classes: list[str]) -> dict:
    kind = KIND_NAMES.get(pick.kind, pick.kind)
    reason = REASON_RANDOM if pick.kind == active.RANDOM else pick.reason
    if pick.kind == active.UNSURE and pick.probability is not None and pick.probability >= SURE:
        reason = REASON_SURE_CHECK  # the reason and the suggestion come from this one model: agree
    label = classes[pick.suggestion] if pick.suggestion is not None else ""
    probability = round(pick.probability, 4) if pick.probability is not None else None
    return {"label": label, "probability": probability, "kind": kind, "reason": reason}


def estimate_for(project: Project) -> dict:
    """The quick model's accuracy from the random picks labelled so far (each suggestion made before
    its label was given): {"accuracy", "low", "high", "n"}; {"n": n} while too few for a figure."""
    asked = list(Image.objects.filter(project=project, asked_as="random", labelled_at__isnull=False)
                 .exclude(suggested_label="").values_list("suggested_label", "label__name"))
    if len(asked) < MIN_RANDOM_FOR_ESTIMATE:
        return {"n": len(asked)}
    accuracy, low, high = active.honest_estimate([s for s, _ in asked], [g for _, g in asked])
    return {"accuracy": round(accuracy, 4), "low": round(low, 4), "high": round(high, 4), "n": len(asked)}


def _record_history(ranking: InboxRanking, result: active.Ranking, pool: list[Image], classes) -> None:
    """One snapshot a retrain (once there is an estimate), and the verdict over the last ones."""
    if result.probs is None or "accuracy" not in ranking.estimate:
        ranking.plateau, ranking.plateau_reason = False, ""
        return
    predictions = {str(image.pk): int(c) for image, c in zip(pool, result.probs.argmax(1))}
    snapshot = active.Snapshot(ranking.labels_at, ranking.estimate["accuracy"], predictions,
                               ranking.estimate["low"], ranking.estimate["high"])
    history = [h for h in ranking.history if h.get("labels") != ranking.labels_at]
    ranking.history = (history + [dataclasses.asdict(snapshot)])[-HISTORY_KEPT:]
    verdict = active.has_plateaued([active.Snapshot(**h) for h in ranking.history])
    ranking.plateau = verdict.stopped
    ranking.plateau_reason = (f"Labelling more is unlikely to help: {verdict.message.split(': ')[0]}."
                              if verdict.stopped else "")[:300]


# --- when to recompute ----------------------------------------------------------------------------

def is_stale(project: Project, ranking: InboxRanking | None = None) -> bool:
    """Never computed, labels given or taken since, or Inbox images it has not ranked."""
    ranking = ranking or ranking_for(project)
    if ranking.computed_at is None:
        return True
    if quick_model_images(project).count() != ranking.labels_at:
        return True
    ranked = set(ranking.order)
    return Image.inbox.filter(project=project).exclude(pk__in=ranked).exists()


def due_after_labels(project: Project) -> bool:
    """Every INBOX_RETRAIN_EVERY labels (or label taken back) the quick model retrains."""
    ranking = ranking_for(project)
    given = abs(quick_model_images(project).count() - ranking.labels_at)
    return ranking.computed_at is None or given >= max(1, settings.INBOX_RETRAIN_EVERY)


def rank_schedule(*, project: Project) -> bool:
    """Queue a retrain and ranking; one pending job a project (a fixed job id). True if queued."""
    try:
        queue = django_rq.get_queue("intake")
        job_id = f"inbox-rank-{project.pk}"
        pending = queue.fetch_job(job_id)
        if pending is not None and pending.get_status(refresh=False) in ("queued", "deferred", "scheduled", "started"):
            return False  # the labels given meanwhile are counted by the next label's check
        queue.enqueue("transferapp.jobs.tasks.inbox_rank", project.pk, job_id=job_id, result_ttl=60,
                      job_timeout=JOB_TIMEOUT_S)
    except RedisError:
        logger.warning("Inbox ranking not queued for project %s: Redis unreachable", project.pk)
        return False
    ranking_for(project)
    InboxRanking.objects.filter(project=project).exclude(status=InboxRanking.Status.RUNNING).update(
        status=InboxRanking.Status.QUEUED)
    return True
