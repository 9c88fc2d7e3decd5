"""Predicting uploaded images with a run's artifact (not the database), for the web process."""
import base64
import threading
from collections import OrderedDict

import torch
from django.conf import settings

from transferapp.engine.predict import load_predictor
from transferapp.library import intake
from transferapp.library.images import max_upload_bytes
from transferapp.models import TrainingRun
from transferapp.serving import heatmaps as serving_heatmaps
from transferapp.serving import prediction_log
from transferapp.serving import similar as serving_similar
from transferapp.storage import blobs

# Loading a model costs far more than one prediction, and the uploader sends one image per
# request, so the web process keeps the most recently used models in memory: PREDICT_CACHE_MODELS
# of them (an EfficientNet-Lite0 model is about 20 MB; with 2, four users predicting at once made
# every request reload a model, 3x slower in the soak bench).
_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()
TOP_K = 5


class PredictionError(Exception):
    pass


def use_web_threads() -> None:
    """Run torch on WEB_TORCH_THREADS threads in this (web) process.

    Each web worker thread predicts on its own; torch's default of one thread per core in every
    one of them oversubscribes the CPUs (0.26-2 s for one forward pass on 2 shared cores).
    Called once from wsgi.py, so rq workers (TORCH_THREADS, jobs/tasks.py) are not affected.
    """
    if settings.WEB_TORCH_THREADS > 0:
        torch.set_num_threads(settings.WEB_TORCH_THREADS)


def predictor_for(run: TrainingRun):
    artifact_dir = blobs.artifact_folder(run)  # in bucket mode, this process's copy, refreshed when it changed
    meta = artifact_dir / "meta.json" if artifact_dir else None
    if meta is None or not meta.exists():
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
        while len(_cache) > settings.PREDICT_CACHE_MODELS:
            _cache.popitem(last=False)
        return predictor


def predict_uploaded(run: TrainingRun, uploaded, decoded=lambda pixels: None,
                     source: prediction_log.Source | None = None) -> dict:
    """Top classes for one uploaded image; its size is checked before it is read, and
    `decoded(pixels)` is told its size once it is decoded (the allowance counts by size). With
    `source`, the prediction is logged (prediction_log)."""
    try:
        intake.check_size(uploaded.size, max_upload_bytes())
        checked = intake.check_image(uploaded.read(), max_bytes=max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        raise PredictionError(str(exc)) from None
    decoded(checked.width * checked.height)
    (result,), (evidence,) = _answers(run, [checked.rgb], keep_maps=True, similar=serving_similar.PAGE)
    # Kept for the heat-map URLs the page offers: the image itself is not stored.
    serving_heatmaps.remember(run, predictor_for(run), checked.sha256, checked.rgb, evidence)
    seen = seen_in_training(run, checked.sha256)
    logged = prediction_log.record(run, source, [prediction_log.Answer(uploaded.name, checked, result, seen)]) if source else [None]
    ranked = sorted(result["probabilities"].items(), key=lambda item: item[1], reverse=True)
    return {
        "name": uploaded.name,
        "top": result["top"],
        "confidence": result["probabilities"][result["top"]],
        "answer": result.get("answer", result["top"]),
        "prediction_set": result.get("prediction_set", [result["top"]]),
        "abstained": result.get("abstained", False),
        "unfamiliar": result.get("unfamiliar", False),
        "seen_in_training": seen,
        "prediction_id": logged[0],
        "ranked": [{"label": label, "p": p, "percent": round(100 * p, 1)} for label, p in ranked[:TOP_K]],
        "thumbnail": "data:image/jpeg;base64," + base64.b64encode(checked.thumbnail_jpeg).decode(),
        "digest": checked.sha256,  # names the image's heat maps (heatmaps.py keeps what they need)
        "classes": predictor_for(run).classes,  # the model's order: heat-map URLs name a class by its index
        "similar": serving_similar.with_percent(result.get("similar", [])),
    }


def _answers(run: TrainingRun, images: list, keep_maps: bool = False, similar: int = 0) -> tuple[list[dict], list]:
    """The engine's results at the run's risk level and decision threshold (set on its results
    page), and with `keep_maps` each image's heat-map evidence from the same forward pass; with
    `similar`, each result's most similar training images (serving.similar)."""
    predictor = predictor_for(run)
    wanted = serving_similar.candidates(similar)
    features = prediction_log.enabled()  # the log keeps them (drift); each result's "features" never leaves serving
    try:
        results, evidence = predictor.predict_explained(images, alpha=run.alpha, keep_maps=keep_maps, similar=wanted,
                                                        keep_features=features)
    except ValueError:  # a risk level the model's calibration cannot support: answer at its own
        results, evidence = predictor.predict_explained(images, keep_maps=keep_maps, similar=wanted,
                                                        keep_features=features)
    if similar:
        serving_similar.link(run, results, similar)
    return [_with_threshold(run, result) for result in results], evidence


def top_labels(run: TrainingRun, images: list) -> list[str]:
    """The model's answer (its top class, at the run's decision threshold) for each decoded image,
    unlogged: a reading study's model answers (#26)."""
    results, _ = _answers(run, images)
    return [result["top"] for result in results]


def _with_threshold(run: TrainingRun, result: dict) -> dict:
    """Two-class runs with a saved decision threshold call the positive class from that score; an
    image refused as unfamiliar stays refused."""
    if run.decision_threshold is None or run.positive_class not in result["probabilities"] or result.get("unfamiliar"):
        return result
    positive = run.positive_class
    other = next(c for c in result["probabilities"] if c != positive)
    top = positive if result["probabilities"][positive] >= run.decision_threshold else other
    return {**result, "top": top, "prediction_set": [top], "abstained": False,
            "answer": f"Likely {top} (threshold {run.decision_threshold:g} on “{positive}”)"}


def seen_in_training(run: TrainingRun, sha256: str) -> bool:
    """Whether this exact file trained the run's model: its answer then says nothing about new images
    (and counts in no accuracy figure)."""
    return sha256 in predictor_for(run).trained_on


def describe_for_api(run: TrainingRun, name: str, result: dict, seen: bool = False) -> dict:
    """One image's answer in the API's (and the export's) shape, from the calibrated result: the
    prediction set holds the labels the model cannot rule out; abstained is its "don't know"."""
    ranked = [{"label": label, "probability": p}
              for label, p in sorted(result["probabilities"].items(), key=lambda item: item[1], reverse=True)]
    top = {"label": result["top"], "probability": result["probabilities"][result["top"]]}
    return {"file": name, "model": {"project": run.project.name, "version": run.version, "base": run.base_model},
            "top": top, "predictions": ranked, "prediction_set": result.get("prediction_set", [result["top"]]),
            "abstained": bool(result.get("abstained", False)), "seen_in_training": seen,
            # Added (#32): abstained because the image is unlike the training images; `top` is then only the closest class.
            "unfamiliar": bool(result.get("unfamiliar", False))}


def predict_checked(run: TrainingRun, items: list[tuple[str, "intake.CheckedImage"]], heatmap: bool = False,
                    similar: int = 0, source: prediction_log.Source | None = None) -> list[dict]:
    """API-shaped answers for already checked images, predicted as one batch; with `heatmap`, each
    carries its overlay for the predicted class as a base64 PNG; with `similar`, its `similar` most
    similar training images ({"image", "label", "similarity"}, most similar first). With `source`,
    they are logged (one bulk insert) and each answer carries its log row's "id" (null while
    PREDICTION_LOG is off)."""
    images = [checked.rgb for _, checked in items]
    results, evidence = _answers(run, images, keep_maps=heatmap, similar=similar)
    seen = [seen_in_training(run, checked.sha256) for _, checked in items]
    answers = [describe_for_api(run, name, result, was_seen)
               for (name, _), result, was_seen in zip(items, results, seen)]
    for answer, result in zip(answers, results):
        answer["similar"] = result.get("similar", [])
    if source is not None:
        logged = [prediction_log.Answer(name, checked, result, was_seen)
                  for (name, checked), result, was_seen in zip(items, results, seen)]
        for answer, pk in zip(answers, prediction_log.record(run, source, logged)):
            answer["id"] = pk
    for answer, image, kept in zip(answers, images, evidence):  # drawn at once: an API client fetches no URL
        png = predictor_for(run).heat_map_png(image, kept, answer["top"]["label"])
        answer["heatmap_png_base64"] = base64.b64encode(png).decode()
    return answers


def heatmap_png(run: TrainingRun, digest: str, class_index: int) -> bytes | None:
    """A recently predicted image's overlay for the model's class number `class_index`, or None
    once it is no longer kept."""
    predictor = predictor_for(run)
    return serving_heatmaps.cached_png(run, predictor, digest, _class_name(predictor, class_index))


def stored_heatmap_png(run: TrainingRun, image, class_index: int) -> bytes:
    predictor = predictor_for(run)
    return serving_heatmaps.stored_image_png(run, predictor, image, _class_name(predictor, class_index))


def stored_similar(run: TrainingRun, image, k: int = serving_similar.PAGE) -> list[dict]:
    """The training images most like one image of the project (itself left out), for the results page."""
    return serving_similar.with_percent(serving_similar.for_stored_image(run, predictor_for(run), image, k))


def _class_name(predictor, class_index: int) -> str:
    if class_index >= len(predictor.classes):
        raise PredictionError("This model has no such class.")
    return predictor.classes[class_index]
