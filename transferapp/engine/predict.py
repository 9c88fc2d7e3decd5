"""Load an artifact directory (meta.json + model.pt) and predict; never touches the database."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from .data import eval_transform, load_rgb
from .features import pick_device
from .zoo import Classifier, create_backbone


class Predictor:
    def __init__(self, model: Classifier, classes: list[str], preprocessing: dict, device: torch.device,
                 batch_size: int = 32):
        self.model, self.classes, self.preprocessing = model, list(classes), preprocessing
        self.device, self.batch_size = device, batch_size
        self.transform = eval_transform(preprocessing)

    def predict_paths(self, paths) -> list[dict]:
        results = []
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start:start + self.batch_size]  # decode a batch at a time: bounded memory
            images = [load_rgb(p) for p in chunk]
            for path, result in zip(chunk, self.predict_images(images)):
                results.append({"path": path, **result})
        return results

    def predict_images(self, images: list[Image.Image]) -> list[dict]:
        if not images:
            return []
        batch = torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            probs = self.model.predict_proba(batch.contiguous(memory_format=torch.channels_last)).cpu()
        return [self._describe(p) for p in probs]

    def _describe(self, p: torch.Tensor) -> dict:
        top = int(p.argmax())
        probabilities = {c: float(v) for c, v in zip(self.classes, p)}
        return {"top": self.classes[top], "confidence": float(p[top]),
                "probabilities": dict(sorted(probabilities.items(), key=lambda kv: -kv[1]))}


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
    model.eval().to(device=device, memory_format=torch.channels_last)
    return Predictor(model, meta["classes"], meta["preprocessing"], device)
