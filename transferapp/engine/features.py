"""Backbone embeddings and their on-disk cache.

Each image's features are computed once ever: the cache key is the sha256 of the file's bytes plus
the base, its preprocessing (so image_size), the numeric precision, the decoder version
(imaging.DECODE_VERSION) and the view. A retrain after
adding ten images therefore costs ten forward passes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import ImageOps

from . import imaging
from .data import Sample, eval_transform, load_rgb
from .zoo import Backbone, create_backbone, frozen_runner, precision

VIEWS = ("orig", "flip")


class TrainingCancelled(Exception):
    """should_stop() returned True; raised between batches."""


def pick_device(device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device) -> str:
    """Where a run computes, for its page: "cuda: NVIDIA H100 80GB HBM3" or "cpu: 2 threads"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {torch.get_num_threads()} threads"


def prepare_for_inference(backbone: Backbone, device: torch.device) -> None:
    # channels_last halves the CPU forward pass of these conv nets.
    backbone.model.eval().to(device=device, memory_format=torch.channels_last)


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_folder(cache_dir: Path, backbone: Backbone, device: torch.device) -> Path:
    signature = json.dumps({"prep": backbone.preprocessing, "precision": precision(device),
                            "decode": imaging.DECODE_VERSION}, sort_keys=True)
    return Path(cache_dir) / f"{backbone.name}-{hashlib.sha256(signature.encode()).hexdigest()[:12]}"


def embed(samples_or_paths: Iterable, backbone: Backbone | str, *, cache_dir: Path | None = None,
          image_size: int = 224, batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
          should_stop: Callable[[], bool] | None = None, view: str = "orig", device=None) -> np.ndarray:
    """Features [N, feature_dim] (float32) in input order; cached images cost no forward pass."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    paths = [s.path if isinstance(s, Sample) else str(s) for s in samples_or_paths]
    device = pick_device(device)
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, image_size=image_size)
    prepare_for_inference(backbone, device)
    out = np.zeros((len(paths), backbone.feature_dim), dtype=np.float32)
    folder = cache_folder(cache_dir, backbone, device) if cache_dir else None
    cache_files = [_cache_file(folder, p, view) for p in paths] if folder else [None] * len(paths)
    todo = []
    for i, cache_file in enumerate(cache_files):
        if cache_file is not None and cache_file.exists():
            out[i] = np.load(cache_file)
        else:
            todo.append(i)
    _compute(paths, todo, out, cache_files, backbone=backbone, device=device, batch_size=batch_size, view=view,
             progress=progress, should_stop=should_stop)
    return out


def precompute(paths: Iterable, base: str, cache_dir: Path, image_size: int = 224, *,
               views: tuple[str, ...] = ("orig",), should_stop=None, progress=None) -> int:
    """Fill the cache right after upload (background job); returns how many images were given."""
    paths = list(paths)
    backbone = create_backbone(base, image_size=image_size)
    for view in views:
        embed(paths, backbone, cache_dir=cache_dir, view=view, should_stop=should_stop, progress=progress)
    return len(paths)


def forget_cached_features(cache_dir: Path, digests: Iterable[str]) -> int:
    """Delete every cached feature (any base, precision or view) of these file contents (sha256 hex
    digests): features are derived from the images, so they must go when the images go."""
    removed = 0
    for digest in digests:
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        for path in Path(cache_dir).glob(f"*/{digest[:2]}/{digest}.*.npy"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def cached_feature_digests(cache_dir: Path) -> set[str]:
    """The file contents (sha256 hex digests) that have any cached feature."""
    return {path.name.split(".", 1)[0] for path in Path(cache_dir).glob("*/??/*.npy")
            if _HEX_DIGEST.fullmatch(path.name.split(".", 1)[0])}


_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def cached_rows(cache_dir: Path, base: str, digests: list[str], view: str = "orig") -> dict[str, np.ndarray]:
    """The cached features of these file contents (sha256 hex digests) for `base`, read from disk
    only: no backbone is built, nothing is computed (for the web process, where a forward pass does
    not belong). Digests with no cached row are left out of the answer. A base can have several
    cache folders (a GPU worker's precision, an older decoder): rows come from the one folder that
    holds the most of these digests, so all of them share one feature space."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    wanted = [d for d in dict.fromkeys(digests) if _HEX_DIGEST.fullmatch(d)]
    # a folder is "<base>-<12 hex>"; a base whose name begins with this one's must not match
    folders = [f for f in Path(cache_dir).glob(f"{base}-*") if f.is_dir() and f.name.rpartition("-")[0] == base]
    folders = folders if wanted else []
    found = {folder: [d for d in wanted if (folder / d[:2] / f"{d}.{view}.npy").exists()] for folder in folders}
    if not found or not max(map(len, found.values())):
        return {}
    best = max(found, key=lambda folder: (len(found[folder]), folder.stat().st_mtime))
    rows = {}
    for digest in found[best]:
        try:
            rows[digest] = np.load(best / digest[:2] / f"{digest}.{view}.npy")
        except (OSError, ValueError):  # removed or half-written meanwhile: as if not cached
            continue
    return rows


def _cache_file(folder: Path, path: str, view: str) -> Path:
    digest = file_digest(path)
    return folder / digest[:2] / f"{digest}.{view}.npy"


def _compute(paths, todo, out, cache_files, *, backbone, device, batch_size, view, progress, should_stop) -> None:
    """Stream the uncached images through the backbone a batch at a time (bounded memory); a helper
    thread decodes the next batch while this one runs (PIL and torch release the GIL)."""
    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    decode = functools.partial(_decode_batch, paths, eval_transform(backbone.preprocessing), view)
    if progress:
        progress(0, len(todo))
    done = 0
    prep = backbone.preprocessing
    forward = frozen_runner(backbone.model, device, (3, prep["crop"], prep["crop"]), len(todo))
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        pending = pool.submit(decode, batches[0]) if batches else None
        for k, idx in enumerate(batches):
            if should_stop and should_stop():
                raise TrainingCancelled("Training was cancelled.")
            batch = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(decode, batches[k + 1])
            feats = forward(batch).float().cpu().numpy()
            for i, f in zip(idx, feats):
                out[i] = f
                if cache_files[i] is not None:
                    _atomic_save(cache_files[i], f)
            done += len(idx)
            if progress:
                progress(done, len(todo))


def _decode_batch(paths, transform, view, idx) -> torch.Tensor:
    images = [load_rgb(paths[i]) for i in idx]
    if view == "flip":
        images = [ImageOps.mirror(im) for im in images]
    return torch.stack([transform(im) for im in images])


def _atomic_save(target: Path, array: np.ndarray) -> None:
    # A background precompute job and a training run may write the same entry concurrently.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, array)
    os.replace(tmp, target)
