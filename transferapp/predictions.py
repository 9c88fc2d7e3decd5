"""Predicting uploaded images with a run's artifact (not the database), for the web process."""
import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

import django_rq
from PIL import Image as PILImage
from rq import Worker

from transferapp import intake
from transferapp.engine.data import to_rgb
from transferapp.engine.predict import load_predictor
from transferapp.models import TrainingRun

# Loading a model costs far more than one prediction, and the uploader sends one image per
# request, so the web process keeps the few most recently used models in memory.
_CACHE_SIZE = 2
_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()
MAX_PREDICT_BYTES = 25 * 1024 * 1024
MAX_PREDICT_PIXELS = 40_000_000
TOP_K = 5


class PredictionError(Exception):
    pass


def predictor_for(run: TrainingRun):
    artifact_dir = Path(run.artifact_dir)
    meta = artifact_dir / "meta.json"
    if not meta.exists():
        raise PredictionError("This run's model files are missing; train again.")
    key = (str(artifact_dir), meta.stat().st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        try:
            predictor = load_predictor(artifact_dir)
        except Exception as exc:  # a damaged or half-copied model folder must not become a server error
            raise PredictionError(f"This run's model could not be loaded ({type(exc).__name__}); train again.") from None
        _cache[key] = predictor
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return predictor


def predict_uploaded(run: TrainingRun, uploaded) -> dict:
    if uploaded.size > MAX_PREDICT_BYTES:
        raise PredictionError(f"The file is {uploaded.size / 1e6:.1f} MB; the limit is {MAX_PREDICT_BYTES / 1e6:.0f} MB.")
    return predict_upload(run, uploaded.name, uploaded.read())


def predict_upload(run: TrainingRun, name: str, data: bytes) -> dict:
    try:
        checked = intake.check_image(data, max_bytes=MAX_PREDICT_BYTES, max_pixels=MAX_PREDICT_PIXELS)
    except intake.ImageRejected as exc:
        raise PredictionError(str(exc)) from None
    image = to_rgb(PILImage.open(io.BytesIO(data)))
    result = predictor_for(run).predict_images([image])[0]
    ranked = sorted(result["probabilities"].items(), key=lambda item: item[1], reverse=True)
    return {
        "name": name,
        "top": ranked[0][0],
        "confidence": ranked[0][1],
        "ranked": [{"label": label, "p": p, "percent": round(100 * p, 1)} for label, p in ranked[:TOP_K]],
        "thumbnail": "data:image/jpeg;base64," + base64.b64encode(checked.thumbnail_jpeg).decode(),
    }


def workers_online() -> bool:
    try:
        return bool(Worker.all(queue=django_rq.get_queue("default")))
    except Exception:  # Redis down: the page still renders; the run stays queued in the database
        return False
