"""Load an artifact directory (meta.json + model.pt) and predict; never touches the database."""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import calibrate as cal
from . import explain
from .data import eval_transform, load_rgb
from .features import pick_device
from .final import TRAINED_ON
from .imaging import DecodeError
from .zoo import Averaged, Classifier, create_backbone


class Trust:
    """What an artifact keeps for honest answers: sorted conformal scores, the temperature, the
    novelty bank and threshold. Empty for artifacts written before it existed (and the interim
    first model): then every answer is the top class, as before."""

    def __init__(self, summary: dict | None = None, arrays: dict | None = None):
        summary, arrays = summary or {}, arrays or {}
        self.scores = np.asarray(arrays.get("scores", np.zeros(0)), dtype=np.float64)
        self.bank = np.asarray(arrays["bank"], dtype=np.float32) if "bank" in arrays else None
        self.temperature = float(summary.get("temperature", 1.0))
        self.novelty_threshold = summary.get("novelty_threshold")
        self.k = int(summary.get("novelty_k", cal.NOVELTY_K))
        self.default_alpha = float(summary.get("alpha", cal.DEFAULT_ALPHA))
        # Which training image each bank row is, and its label: absent from older artifacts.
        keyed = self.bank is not None and "bank_keys" in arrays and len(arrays["bank_keys"]) == len(self.bank)
        self.bank_keys = [str(k) for k in arrays["bank_keys"]] if keyed else None
        self.bank_labels = [int(v) for v in arrays["bank_labels"]] if keyed and "bank_labels" in arrays else None

    @property
    def available(self) -> bool:
        return len(self.scores) > 0

    def threshold(self, alpha: float | None) -> float | None:
        """The conformal threshold at `alpha`; ValueError when an explicit alpha needs more
        calibration images than the model has, None (no sets) when the default one does."""
        if not self.available:
            return None
        if alpha is None:
            if self.default_alpha < cal.min_alpha(len(self.scores)):
                return None
            alpha = self.default_alpha
        return cal.conformal_threshold(self.scores, alpha)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        if self.bank is None or self.novelty_threshold is None:
            return np.zeros(len(features), dtype=bool), np.full(len(features), np.nan)
        distance = cal.knn_distance(cal.normalise(features), self.bank, self.k)
        return distance > self.novelty_threshold, distance

    def similar(self, features: np.ndarray, k: int) -> list[list[tuple[str, int | None, float]]]:
        """Each image's k most similar bank images as (key, label index, cosine similarity), most
        similar first; empty lists for an artifact whose bank rows are not keyed."""
        if self.bank_keys is None or k <= 0:
            return [[] for _ in features]
        rows, sims = cal.most_similar(cal.normalise(features), self.bank, k)
        labels = self.bank_labels
        return [[(self.bank_keys[r], labels[r] if labels else None, float(s)) for r, s in zip(rr, ss)]
                for rr, ss in zip(rows, sims)]


def decode_each(paths) -> list[tuple[str, Image.Image | str]]:
    """Each path with its decoded image, or the sentence saying why it cannot be read."""
    out = []
    for path in paths:
        try:
            out.append((path, load_rgb(path)))
        except DecodeError as exc:
            out.append((path, str(exc)))
        except OSError as exc:  # a missing or unreadable path: one line, like an undecodable file
            out.append((path, f"This file cannot be read ({exc.strerror or exc})."))
    return out


class Predictor:
    def __init__(self, model: Classifier, classes: list[str], preprocessing: dict, device: torch.device,
                 batch_size: int = 32, trust: Trust | None = None, finetuned: bool = False):
        self.model, self.classes, self.preprocessing = model, list(classes), preprocessing
        self.device, self.batch_size = device, batch_size
        self.transform = eval_transform(preprocessing)
        self.trust = trust or Trust()
        self.trained_on: frozenset[str] = frozenset()  # see read_trained_on
        self.explain_method = explain.method_for(model, finetuned)
        # Web threads share one Predictor. The forward hooks that catch the head's input (novelty)
        # and the last feature maps (heat maps) sit on the shared model, so a pass in one thread
        # would record into another's context: one pass at a time (measured: 6 of 12 concurrent
        # multi-image requests crashed and 35 of 36 heat maps were another request's before this).
        self._model_lock = threading.Lock()

    def predict_paths(self, paths, alpha: float | None = None) -> list[dict]:
        results = []
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start:start + self.batch_size]  # decode a batch at a time: bounded memory
            decoded = decode_each(chunk)
            readable = [(path, image) for path, image in decoded if not isinstance(image, str)]
            answers = iter(self.predict_images([image for _, image in readable], alpha=alpha))
            # In the order given: an unreadable file is a line with its reason, not the end of the run.
            results += [{"path": path, "error": image} if isinstance(image, str) else {"path": path, **next(answers)}
                        for path, image in decoded]
        return results

    def predict_images(self, images: list[Image.Image], alpha: float | None = None) -> list[dict]:
        """Top class and probabilities, plus the prediction set at risk level `alpha` (ValueError
        when the model has too few calibration images for it), whether the image is unlike the
        training images, and the answer in words."""
        return self.predict_explained(images, alpha, keep_maps=False)[0]

    def predict_explained(self, images: list[Image.Image], alpha: float | None = None,
                          keep_maps: bool = True, similar: int = 0,
                          keep_features: bool = False) -> tuple[list[dict], list[explain.Evidence]]:
        """predict_images' results and, from the same forward pass, each image's last feature maps
        (its Evidence), from which heat_map() draws any class's map; with `similar`, each result's
        "similar" lists its most similar training images (see Trust.similar) as {key, label, similarity}.
        With `keep_features`, each result also carries "features": the head's input, normalised, as
        float16 bytes (what the novelty score measured; the prediction log keeps it for drift)."""
        if not images:
            return [], []
        q = self.trust.threshold(alpha)
        batch = torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)
        keeper = explain.last_feature_maps(self.model) if keep_maps else contextlib.nullcontext([])
        with self._model_lock, torch.inference_mode(), cal.head_input(self.model) as seen, keeper as maps:
            probs = self.model.predict_proba(batch.contiguous(memory_format=torch.channels_last)).float().cpu()
        probs = cal.apply_temperature(probs.numpy().astype(np.float64), self.trust.temperature)
        features = seen[0].float().cpu().numpy()
        unfamiliar, distance = self.trust.unfamiliar(features)
        results = [self._describe(p, q, bool(u), float(d)) for p, u, d in zip(probs, unfamiliar, distance)]
        if similar > 0:
            for result, cases in zip(results, self.trust.similar(features, similar)):
                result["similar"] = [{"key": key, "label": None if label is None else self.classes[label],
                                      "similarity": round(sim, 4)} for key, label, sim in cases]
        if keep_features:
            for result, row in zip(results, cal.normalise(features).astype(np.float16)):
                result["features"] = row.tobytes()
        return results, explain.Evidence.per_image(maps) if keep_maps else []

    def heat_map(self, evidence: explain.Evidence, class_name: str) -> np.ndarray:
        """Where the model looked for `class_name`: [h, w] in [0, 1] over the centre crop."""
        with self._model_lock:  # Grad-CAM runs the model's tail: its hooks must not catch it
            return explain.class_map(self.model, evidence, self.classes.index(class_name), self.explain_method)

    def heat_map_png(self, image: Image.Image, evidence: explain.Evidence, class_name: str) -> bytes:
        """The heat map drawn over the image as the model resized it (see explain.overlay)."""
        return explain.png_bytes(explain.overlay(image, self.heat_map(evidence, class_name), self.preprocessing))

    def _describe(self, p: np.ndarray, q: float | None, unfamiliar: bool, distance: float) -> dict:
        top = int(p.argmax())
        probabilities = {c: float(v) for c, v in zip(self.classes, p)}
        members = cal.prediction_sets(p[None], q)[0] if q is not None else [top]
        names = [self.classes[i] for i in members]
        return {"top": self.classes[top], "confidence": float(p[top]),
                "probabilities": dict(sorted(probabilities.items(), key=lambda kv: -kv[1])),
                "prediction_set": [] if unfamiliar else names, "unfamiliar": unfamiliar,
                "abstained": unfamiliar or len(names) != 1,
                "answer": cal.answer_text(names, unfamiliar) if q is not None or unfamiliar else
                f"{names[0]} (too few images to say how sure)",
                "novelty": None if np.isnan(distance) else round(distance, 4), "calibrated": q is not None}


def load_predictor(artifact_dir, device=None) -> Predictor:
    artifact = Path(artifact_dir)
    meta = json.loads((artifact / "meta.json").read_text())
    device = pick_device(device)
    image_size = meta["preprocessing"]["crop"]
    # The architecture only: every weight comes from model.pt, so torchvision files need not exist.
    backbone = create_backbone(meta["base"], image_size=image_size, pretrained=False)
    backbone.preprocessing = meta["preprocessing"]
    # Predictions run wholly in float32 (fp32_from=0), even where training used bf16 autocast: bf16
    # moves probabilities by ~4e-3, and an exported model (float32 ONNX) must predict exactly as the app.
    model = Classifier(backbone, len(meta["classes"]), fp32_from=0)
    model.load_state_dict(torch.load(artifact / "model.pt", map_location="cpu", weights_only=True))
    # A model trained with "images must not be mirrored" never averages with a mirror image.
    model.flip_tta = bool(meta.get("flip_tta", False)) and not meta.get("config", {}).get("no_mirroring", False)
    ensemble = meta.get("ensemble")
    if ensemble:  # the average of the fine-tuned model and the quick one, as fit() scored it
        quick = Classifier(create_backbone(meta["base"], image_size=image_size, pretrained=False), len(meta["classes"]),
                           fp32_from=0)
        quick.load_state_dict(torch.load(artifact / ensemble["file"], map_location="cpu", weights_only=True))
        model = Averaged(model, quick, tuple(ensemble["temperatures"]))
    model.eval().to(device=device, memory_format=torch.channels_last)
    trust_file = artifact / "trust.npz"
    arrays = dict(np.load(trust_file)) if trust_file.exists() and meta.get("trust") else None
    finetuned = meta.get("metrics", {}).get("chosen_stage") in ("finetune", "ensemble")
    predictor = Predictor(model, meta["classes"], meta["preprocessing"], device, trust=Trust(meta.get("trust"), arrays),
                          finetuned=finetuned)
    predictor.trained_on = read_trained_on(artifact)
    return predictor


def read_trained_on(artifact: Path) -> frozenset[str]:
    """The sha256 of every image the model learnt from (empty for a model written before they were
    kept: its predictions are then never marked as seen in training)."""
    listed = artifact / TRAINED_ON
    return frozenset(listed.read_text().split()) if listed.exists() else frozenset()
