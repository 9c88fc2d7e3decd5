"""A map of the project (#24 item 7): every live image's cached features (labelled and Inbox) laid
out in 2-D with openTSNE, computed in the worker (jobs.tasks.map_compute) when the images change.

openTSNE rather than UMAP: with PCA to 50 dimensions first and FFT-accelerated gradients it lays
out 20,000 images on 2 cores well inside the 60 s the issue allows (bench/map_bench.py), and it has
no JIT start-up: umap-learn compiles its numba kernels on the first call in each new worker process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from transferapp.models import Image, Project, ProjectMap
from transferapp.storage import blobs

logger = logging.getLogger(__name__)

PCA_DIMS = 50
# openTSNE's default is 250 exaggerated + 500 normal iterations; the clusters have settled after 250
# normal ones (bench/map_bench.py: the same neighbours kept) and it saves a third of the time.
EXAGGERATED_ITER, NORMAL_ITER = 250, 250
SMALL = 12  # fewer points than this: t-SNE has no neighbourhoods to keep, PCA is the honest layout


def layout(features: np.ndarray, seed: int = 0, n_jobs: int = 2) -> np.ndarray:
    """[N, D] features -> [N, 2] coordinates scaled into [0, 1] (float32)."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 2:  # nothing to lay out relative to: the middle
        return np.full((len(x), 2), 0.5, dtype=np.float32)
    reduced = _pca(x, min(PCA_DIMS, x.shape[1], len(x)))
    if len(x) < SMALL:
        xy = reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 2 - reduced.shape[1])))
    else:
        xy = _tsne(reduced, seed, n_jobs)
    return _unit_square(np.asarray(xy, dtype=np.float32))


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Centre, then project on the top principal directions (randomised SVD: fast for 20,000 x 1280)."""
    from sklearn.decomposition import PCA

    centred = x - x.mean(axis=0)
    if dims < 1:
        return np.zeros((len(x), 2), dtype=np.float32)
    return PCA(n_components=dims, svd_solver="randomized" if dims < min(x.shape) else "full",
               random_state=0).fit_transform(centred).astype(np.float32)


def _tsne(reduced: np.ndarray, seed: int, n_jobs: int) -> np.ndarray:
    from openTSNE import TSNE

    # openTSNE logs "Precomputed initialization provided" at INFO on every fit, precomputed or not
    logging.getLogger("openTSNE").setLevel(logging.WARNING)

    # perplexity must stay below a third of the points; 30 is the usual choice beyond that
    perplexity = float(min(30, (len(reduced) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", initialization="pca",
                negative_gradient_method="fft", n_jobs=n_jobs,
                early_exaggeration_iter=EXAGGERATED_ITER, n_iter=NORMAL_ITER, random_state=seed, verbose=False)
    return np.asarray(tsne.fit(reduced))


def _unit_square(xy: np.ndarray) -> np.ndarray:
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    span[span == 0] = 1.0
    return (xy - low) / span


# --- which images, and whether the stored map still shows them --------------------------------------

def live_images(project: Project):
    """Every image on the map: labelled and Inbox, the trash left out, in a fixed order."""
    return Image.all_objects.filter(project=project, deleted_at__isnull=True).order_by("pk")


def images_digest(project: Project) -> str:
    """A digest of (id, class, split) of the live images: a map computed for another digest is stale
    (a class or a split shows as its colour and outline, so those changes count too)."""
    rows = live_images(project).values_list("pk", "label_id", "split")
    return hashlib.sha256(json.dumps(list(rows)).encode()).hexdigest()


def map_state(project: Project) -> dict:
    """What the page needs to know: the stored map row (or None), whether it shows today's images,
    and whether a computation is waiting or running."""
    row = ProjectMap.objects.filter(project=project).first()
    fresh = bool(row and row.status == ProjectMap.Status.READY and row.images_digest == images_digest(project))
    busy = bool(row and row.status in (ProjectMap.Status.QUEUED, ProjectMap.Status.RUNNING))
    return {"map": row, "fresh": fresh, "busy": busy, "has_points": bool(row and row.points_file)}


def map_schedule(project: Project) -> bool:
    """Queue the layout unless one is pending (a fixed job id per project, as the feature warm-up
    does). Returns whether the map is (now) being computed."""
    import django_rq
    from redis.exceptions import RedisError

    row, _ = ProjectMap.objects.get_or_create(project=project)
    try:
        queue = django_rq.get_queue("intake")
        job_id = f"map-{project.pk}"
        pending = queue.fetch_job(job_id)
        if pending is None or pending.get_status(refresh=False) not in ("queued", "deferred", "scheduled", "started"):
            queue.enqueue("transferapp.jobs.tasks.map_compute", project.pk, job_id=job_id, result_ttl=60)
    except RedisError:
        logger.warning("Map not queued for project %s: Redis unreachable", project.pk)
        ProjectMap.objects.filter(pk=row.pk).update(status=ProjectMap.Status.FAILED,
                                                    error="The job queue cannot be reached; try again shortly.")
        return False
    if row.status != ProjectMap.Status.RUNNING:
        ProjectMap.objects.filter(pk=row.pk).update(status=ProjectMap.Status.QUEUED, error="")
    return True


# --- computing and storing (the worker) -------------------------------------------------------------

def map_compute(project: Project, base_model: str, *, embed_features) -> ProjectMap:
    """Lay out the project's live images and store the points; `embed_features(paths, base)` gives
    the cached features (the job passes engine.features.embed with the cache folder)."""
    row, _ = ProjectMap.objects.get_or_create(project=project)
    ProjectMap.objects.filter(pk=row.pk).update(status=ProjectMap.Status.RUNNING, error="")
    digest = images_digest(project)
    ids, names = _ids_and_files(project)
    start = time.perf_counter()
    xy = layout(embed_features(blobs.media_paths(names), base_model)) if ids else np.zeros((0, 2))
    seconds = time.perf_counter() - start
    points_file = store_points(project, ids, xy, digest)
    previous = row.points_file
    ProjectMap.objects.filter(pk=row.pk).update(
        status=ProjectMap.Status.READY, error="", computed_at=timezone.now(), seconds=round(seconds, 2),
        n_points=len(ids), images_digest=digest, points_file=points_file)
    _forget(previous, keep=points_file)
    row.refresh_from_db()
    return row


def map_failed(project: Project, error: str) -> None:
    ProjectMap.objects.filter(project=project).update(status=ProjectMap.Status.FAILED, error=error[:300])


def _ids_and_files(project: Project) -> tuple[list[int], list[str]]:
    rows = list(live_images(project).values_list("pk", "file"))
    return [pk for pk, _ in rows], [name for _, name in rows]


def store_points(project: Project, ids: list[int], xy: np.ndarray, digest: str) -> str:
    """Write {"ids", "xy"} (4 decimals: plenty for a canvas) and return what the row records."""
    record = blobs.folder_record(f"projects/{project.pk}/map")  # deleted with the project's folder
    relative = f"{digest[:16]}-{uuid.uuid4().hex[:8]}.json"  # a new name: a bucket's cached copy never stale
    payload = {"ids": [int(i) for i in ids], "xy": np.round(np.asarray(xy, dtype=float), 4).tolist()}
    blobs.store_text(record, relative, json.dumps(payload, separators=(",", ":")))
    return f"{record}/{relative}"


def load_points(row: ProjectMap | None) -> dict:
    """The stored layout as {"ids": [...], "xy": [[x, y], ...]}; empty when none is readable."""
    if not row or not row.points_file:
        return {"ids": [], "xy": []}
    record, _, relative = row.points_file.rpartition("/")
    (path,) = blobs.stored_paths(record, [relative])
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        logger.warning("Map points unreadable for project %s: %s", row.project_id, row.points_file)
        return {"ids": [], "xy": []}


def _forget(previous: str, keep: str) -> None:
    """The previous layout's file, once the row points at the new one (on disk; a bucket keeps it
    until the project's folder goes)."""
    if previous and previous != keep and not blobs.in_bucket(previous):
        Path(previous).unlink(missing_ok=True)


def feature_cache() -> Path:
    return Path(settings.FEATURE_CACHE_DIR)
