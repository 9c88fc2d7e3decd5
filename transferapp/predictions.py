"""Predicting uploaded images with a run's artifact (not the database), for the web process."""
import base64
import threading
from collections import OrderedDict
from pathlib import Path

import django_rq
import torch
from django.conf import settings
from rq import Worker

from transferapp import intake
from transferapp.engine.onnx_predict import onnx_predictor
from transferapp.engine.predict import load_predictor
from transferapp.models import TrainingRun
from transferapp.services import max_upload_bytes

# Loading a model costs far more than one prediction, and the uploader sends one image per
# request, so the web process keeps the few most recently used models in memory.
_CACHE_SIZE = 2
_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()
TOP_K = 5


class PredictionError(Exception):
    pass


def use_web_threads() -> None:
    """Run torch on WEB_TORCH_THREADS threads in this (web) process.

    Each web worker thread predicts on its own; torch's default of one thread per core in every
    one of them oversubscribes the CPUs (0.26-2 s for one forward pass on 2 shared cores).
    Called once from wsgi.py, so rq workers (TORCH_THREADS, tasks.py) are not affected.
    """
    if settings.WEB_TORCH_THREADS > 0:
        torch.set_num_threads(settings.WEB_TORCH_THREADS)


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
            if predictor.device.type == "cpu":  # GPUs stay with PyTorch
                predictor = onnx_predictor(predictor, artifact_dir)
        except Exception as exc:  # a damaged or half-copied model folder must not become a server error
            raise PredictionError(f"This run's model could not be loaded ({type(exc).__name__}); train again.") from None
        _cache[key] = predictor
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return predictor


def predict_uploaded(run: TrainingRun, uploaded) -> dict:
    """Top classes for one uploaded image; its size is checked before it is read."""
    try:
        intake.check_size(uploaded.size, max_upload_bytes())
        checked = intake.check_image(uploaded.read(), max_bytes=max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        raise PredictionError(str(exc)) from None
    result = predictor_for(run).predict_images([checked.rgb])[0]
    ranked = sorted(result["probabilities"].items(), key=lambda item: item[1], reverse=True)
    return {
        "name": uploaded.name,
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


def prediction_set_for(run: TrainingRun, ranked: list[dict]) -> tuple[list[str], bool]:
    """(prediction set, abstained): the labels the model cannot rule out, and whether it declines
    to answer. The one place where calibrated "don't know" plugs in; until the run carries
    calibrated thresholds, the set is the top label alone and the model never abstains."""
    return [ranked[0]["label"]], False


def describe_for_api(run: TrainingRun, name: str, result: dict) -> dict:
    """One image's answer in the API's (and the export's) shape, from Predictor's result."""
    ranked = [{"label": label, "probability": p}
              for label, p in sorted(result["probabilities"].items(), key=lambda item: item[1], reverse=True)]
    prediction_set, abstained = prediction_set_for(run, ranked)
    return {"file": name, "model": {"project": run.project.name, "version": run.version, "base": run.base_model},
            "top": ranked[0], "predictions": ranked, "prediction_set": prediction_set, "abstained": abstained}


def predict_checked(run: TrainingRun, items: list[tuple[str, "intake.CheckedImage"]]) -> list[dict]:
    """API-shaped answers for already checked images, predicted as one batch."""
    results = predictor_for(run).predict_images([checked.rgb for _, checked in items])
    return [describe_for_api(run, name, result) for (name, _), result in zip(items, results)]
