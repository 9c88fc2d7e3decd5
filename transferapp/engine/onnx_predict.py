"""The web process's predictor: the export's ONNX graph (uint8 pixels -> probabilities) in ONNX Runtime.

ONNX Runtime runs EfficientNet-Lite0 on one thread in about 60% of eager PyTorch's float32 time
(bench/api_latency.py), and it is the very graph the export bundle ships, so the app, the API and
the bundle compute the same numbers. Before use, each graph is checked against the PyTorch
predictor on a test image (|dp| <= 1e-5); any failure keeps the PyTorch predictor.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from .export import write_onnx
from .predict import Predictor

log = logging.getLogger(__name__)
CHECK_TOLERANCE = 1e-5
GRAPH_NAME = "predict.onnx"


class OnnxPredictor:
    def __init__(self, torch_predictor: Predictor, session):
        self.classes, self.preprocessing = torch_predictor.classes, torch_predictor.preprocessing
        self.session, self._describe = session, torch_predictor._describe
        # The app's own Resize + CenterCrop on the PIL image; ToTensor + Normalize are in the graph.
        self.resize_crop = T.Compose(torch_predictor.transform.transforms[:2])

    def pixels(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.resize_crop(image.convert("RGB")), dtype=np.uint8).transpose(2, 0, 1)

    def predict_images(self, images: list[Image.Image]) -> list[dict]:
        if not images:
            return []
        probs = self.session.run(None, {"pixels": np.stack([self.pixels(im) for im in images])})[0]
        return [self._describe(torch.from_numpy(p)) for p in probs]


def onnx_predictor(torch_predictor: Predictor, artifact_dir) -> OnnxPredictor | Predictor:
    """An OnnxPredictor when ONNX Runtime is available and agrees with PyTorch, else `torch_predictor`."""
    try:
        import onnxruntime as ort

        graph = Path(artifact_dir) / GRAPH_NAME
        if not graph.exists():
            tmp = graph.with_suffix(".onnx.tmp")
            write_onnx(torch_predictor, tmp)
            tmp.replace(graph)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        candidate = OnnxPredictor(torch_predictor, session)
        _check(candidate, torch_predictor)
        return candidate
    except Exception as exc:  # a missing runtime or an unexportable model: PyTorch still predicts
        log.warning("Predicting with PyTorch, not ONNX Runtime: %s", exc)
        return torch_predictor


def _check(candidate: OnnxPredictor, reference: Predictor) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8))
    got = candidate.predict_images([image])[0]["probabilities"]
    want = reference.predict_images([image])[0]["probabilities"]
    worst = max(abs(got[c] - want[c]) for c in want)
    if worst > CHECK_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.2e}")
