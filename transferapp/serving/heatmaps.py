"""Heat maps for the web process: where a run's model looked, for any class, cached by content.

Predict-page images are not stored, so what their heat maps need is kept when the image is
predicted (the API draws its one overlay at once and keeps nothing): the last feature maps from
that same forward pass (float16, 125 KB for EfficientNet-Lite0) and the image as the model resized
it (~200 KB), keyed by (run, model file, SHA-256 of the image's bytes). Any class's overlay is then
drawn from them on demand (CAM: one small product; Grad-CAM: a backward pass through the head
only), never by running the model again, and kept as a PNG under the same key plus the class, so a
reload costs a dictionary lookup. One LRU holds both, bounded by HEATMAP_CACHE_MB (default 64:
about 150 images' evidence and their overlays).
Images stored in the project (the misclassified gallery) are recomputed from their file when
evicted; a predict-page image, once evicted, needs predicting again (the page says so).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from django.conf import settings
from PIL import Image as PILImage

from transferapp.engine import explain, imaging
from transferapp.models import Image, TrainingRun
from transferapp.storage import blobs

_entries: "OrderedDict[tuple, object]" = OrderedDict()
_sizes: dict[tuple, int] = {}
_lock = threading.Lock()


def _model_key(run: TrainingRun) -> tuple:
    """A run's model changes once (its quick model is replaced by the final one): the file's mtime says which."""
    folder = blobs.artifact_folder(run)
    meta = folder / "meta.json" if folder else None
    return run.pk, meta.stat().st_mtime_ns if meta and meta.exists() else 0


def _get(key: tuple):
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]
    return None


def _put(key: tuple, value, nbytes: int) -> None:
    budget = settings.HEATMAP_CACHE_MB * 1024 * 1024
    if nbytes > budget:
        return
    with _lock:
        _entries[key], _sizes[key] = value, nbytes
        _entries.move_to_end(key)
        while sum(_sizes.values()) > budget:
            oldest, _ = _entries.popitem(last=False)
            del _sizes[oldest]


def remember(run: TrainingRun, predictor, digest: str, image: PILImage.Image, evidence: explain.Evidence) -> None:
    """Keep what any class's overlay of this image needs, from the forward pass that predicted it."""
    size, _ = explain.crop_box(image.size, predictor.preprocessing)
    resized = image.convert("RGB").resize(size, PILImage.BICUBIC)  # overlay() leaves it at this size
    maps = evidence.maps.half()
    _put(("evidence", *_model_key(run), digest), (resized, maps), maps.numel() * 2 + size[0] * size[1] * 3)


def cached_png(run: TrainingRun, predictor, digest: str, class_name: str) -> bytes | None:
    """The overlay for a recently predicted image, or None when it is no longer kept."""
    model = _model_key(run)
    png = _get(("png", *model, digest, class_name))
    if png is None:
        kept = _get(("evidence", *model, digest))
        if kept is None:
            return None
        resized, maps = kept
        png = predictor.heat_map_png(resized, explain.Evidence(maps.float()), class_name)
        _put(("png", *model, digest, class_name), png, len(png))
    return png


def stored_image_png(run: TrainingRun, predictor, image: Image, class_name: str) -> bytes:
    """The overlay for an image in the project, predicted again from its file when not kept."""
    png = cached_png(run, predictor, image.sha256, class_name)
    if png is None:
        with image.file.open("rb") as f:
            rgb = imaging.load_rgb(f.read())
        _, (evidence,) = predictor.predict_explained([rgb])
        remember(run, predictor, image.sha256, rgb, evidence)
        png = cached_png(run, predictor, image.sha256, class_name) or predictor.heat_map_png(rgb, evidence, class_name)
    return png


def choices(classes: list[str], first: list[str], url_for) -> list[dict]:
    """The classes a heat map can be shown for, `first` (the prediction, then e.g. the true class)
    leading, each with its overlay's URL (`url_for(class_index)`)."""
    order = [c for c in dict.fromkeys(first) if c in classes] + [c for c in classes if c not in first]
    return [{"label": c, "url": url_for(classes.index(c))} for c in order]


def clear() -> None:
    with _lock:
        _entries.clear()
        _sizes.clear()
