"""An export bundle: the model as ONNX plus a stand-alone predict.py (Pillow, numpy, onnxruntime),
and the proof that it predicts what the app predicts. No Django here.

model.onnx takes uint8 pixels, NCHW (batch, 3, crop, crop), RGB, already resized and centre-cropped
by predict.py, and returns probabilities (batch, classes) and the features entering the head (batch,
dim). Normalisation, the mirror averaging the app uses for the model (flip_tta) and the softmax are
inside the graph; resizing stays outside in Pillow, because an in-graph resize differs from Pillow's
by up to 1/255 (DESIGN.md).

"Don't know" travels too: the conformal threshold in config.json, and the novelty rule (the app's
bank of normalised training features from trust.npz, float16 as the app keeps it, with its k and
threshold) in novelty_bank.npy, so predict.py abstains on an image unlike the training images
where the app does. The bank is the app's own, not a smaller sample: a smaller one would move the
distances and the answers near the threshold.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data import load_rgb
from .predict import load_predictor
from .zoo import Averaged, average_probabilities

BUNDLE_TEMPLATE = Path(__file__).with_name("bundle")
SAMPLE_SIDE = 96  # samples are shrunk to this longer side: a small bundle, still real photos
SELFTEST_TIMEOUT_S = 300
NOVELTY_BANK = "novelty_bank.npy"
# An image unlike most training sets, shipped with the samples so the self-test covers "don't know"
# (the app's own verdict on it is recorded, whatever it is).
UNFAMILIAR_SAMPLE = ("a solid grey square (made by the export)", (128, 128, 128))
OPSET = 17


class PixelsToProbabilities(nn.Module):
    """uint8 NCHW pixels -> (probabilities, features), exactly as Predictor does after its ToTensor,
    including the temperature a fine-tuned model was calibrated with; the features are the head's
    input for the unmirrored image, the ones the app's novelty check measures."""

    def __init__(self, model, preprocessing: dict, flip_tta: bool, temperature: float = 1.0):
        super().__init__()
        # An ensemble (zoo.Averaged) ships both networks in the one graph: the fine-tuned one (with
        # its mirror averaging) and the quick one (never mirrored), averaged as Averaged does.
        self.quick, self.member_temperatures = None, (1.0, 1.0)
        if isinstance(model, Averaged):
            model, self.quick, self.member_temperatures = model.finetuned, model.quick, model.temperatures
        self.body, self.head, self.flip_tta, self.temperature = model.body, model.head, flip_tta, temperature
        self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def _probs(self, x):
        return torch.softmax(self.head(self.body(x)), -1)

    def forward(self, pixels):
        x = (pixels.float() / 255.0 - self.mean) / self.std
        features = self.body(x)
        probs = torch.softmax(self.head(features), -1)
        if self.flip_tta:
            probs = (probs + self._probs(torch.flip(x, dims=[3]))) / 2
        if self.quick is not None:
            quick = torch.softmax(self.quick.head(self.quick.body(x)), -1)
            probs = average_probabilities(probs, quick, self.member_temperatures)
        if self.temperature != 1.0:  # as calibrate.apply_temperature: on the averaged probabilities
            probs = torch.softmax(torch.log(probs.clamp_min(1e-12)) / self.temperature, -1)
        return probs, features


@dataclass
class ExportResult:
    folder: Path
    zip_path: Path
    passed: bool
    report: dict


def export_bundle(artifact_dir, out_dir, *, name: str, samples: list[tuple[str, str]], model_info: dict, card: str,
                  alpha: float | None = None) -> ExportResult:
    """Write the bundle into out_dir/bundle, run its self-test in a clean interpreter, zip it.

    name: the zip's top folder; model_info: what predict.py reports as "model" ({project, version, base});
    samples: (name, path) of images to ship as the parity proof (shrunk, stored as PNG); alpha: the
    risk level of the bundle's prediction sets (the model's own when None or not supported).
    """
    predictor = load_predictor(artifact_dir, device="cpu")
    meta = json.loads((Path(artifact_dir) / "meta.json").read_text())
    folder = Path(out_dir) / "bundle"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "samples").mkdir(parents=True)
    prep = meta["preprocessing"]
    write_onnx(predictor, folder / "model.onnx")
    config = {"format": 1, "model": model_info, "preprocessing": prep, "flip_tta": bool(predictor.model.flip_tta),
              "input": {"name": "pixels", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", 3, prep["crop"], prep["crop"]],
                        "channels": "RGB"},
              "output": {"name": "probabilities", "shape": ["batch", len(predictor.classes)],
                         "features": {"name": "features", "shape": ["batch", predictor.model.head.in_features]}}}
    alpha = _supported_alpha(predictor, alpha)
    q = predictor.trust.threshold(alpha)
    if q is not None:  # predict.py then answers with the app's prediction sets
        config["thresholds"] = {"alpha": alpha if alpha is not None else predictor.trust.default_alpha, "q": q}
    novelty = _write_novelty_bank(predictor.trust, folder)
    if novelty:  # predict.py then says "don't know" for an image unlike the training images
        config["novelty"] = novelty
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "labels.json").write_text(json.dumps(predictor.classes, indent=2))
    expected = _sample_expectations(predictor, samples, folder / "samples", alpha)
    (folder / "samples.json").write_text(json.dumps(expected, indent=1))
    shutil.copy(BUNDLE_TEMPLATE / "predict.py", folder / "predict.py")
    (folder / "requirements.txt").write_text("onnxruntime>=1.18\nnumpy>=1.26\npillow>=10.4\n")
    (folder / "README.md").write_text(card)
    passed, report = run_selftest(folder)
    zip_path = Path(out_dir) / "bundle.zip"
    _zip(folder, zip_path, root=name)
    return ExportResult(folder, zip_path, passed, report)


def _supported_alpha(predictor, alpha: float | None) -> float | None:
    """`alpha`, or None (the model's own level) when it has too few calibration images for it, as
    the app answers then."""
    try:
        predictor.trust.threshold(alpha)
        return alpha
    except ValueError:
        return None


def _write_novelty_bank(trust, folder: Path) -> dict | None:
    """The app's novelty rule for predict.py: its bank (float16, as trust.npz keeps it), k and threshold."""
    if trust.bank is None or trust.novelty_threshold is None:
        return None
    np.save(folder / NOVELTY_BANK, trust.bank.astype(np.float16), allow_pickle=False)
    return {"bank": NOVELTY_BANK, "k": trust.k, "threshold": float(trust.novelty_threshold),
            "rule": "unfamiliar when the mean cosine distance of the normalised features to their k nearest bank rows "
                    "exceeds the threshold"}


def write_onnx(predictor, path: Path) -> None:
    """The predictor's model as ONNX: uint8 NCHW pixels in, probabilities out (see the module docstring)."""
    prep = predictor.preprocessing
    model = predictor.model.to("cpu").float()
    wrapper = PixelsToProbabilities(model, prep, bool(model.flip_tta), predictor.trust.temperature).eval()
    example = torch.zeros(1, 3, prep["crop"], prep["crop"], dtype=torch.uint8)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, not broken (zoo.py does the same)
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["pixels"],
                          output_names=["probabilities", "features"],
                          dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}, "features": {0: "batch"}})


def _sample_expectations(predictor, samples, sample_dir: Path, alpha: float | None = None) -> list[dict]:
    """Shrink each sample, store it losslessly, and record what the app's own Predictor says about it
    (at the bundle's risk level), plus one image unlike most training images (UNFAMILIAR_SAMPLE)."""
    rows = []
    for i, (name, source) in enumerate(samples):
        small = load_rgb(source)
        small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.BICUBIC)
        rows.append(_expectation(predictor, small, f"{i:03d}.png", name, sample_dir, alpha))
    name, colour = UNFAMILIAR_SAMPLE
    square = Image.new("RGB", (SAMPLE_SIDE, SAMPLE_SIDE), colour)
    rows.append(_expectation(predictor, square, "unfamiliar.png", name, sample_dir, alpha))
    return rows


def _expectation(predictor, image, file: str, source: str, sample_dir: Path, alpha: float | None) -> dict:
    image.save(sample_dir / file)
    result = predictor.predict_images([load_rgb(sample_dir / file)], alpha=alpha)[0]  # the stored file, decoded as the app does
    return {"file": file, "source": source, "top": result["top"], "probabilities": result["probabilities"],
            "prediction_set": result["prediction_set"], "abstained": result["abstained"],
            "unfamiliar": result["unfamiliar"], "novelty": result["novelty"]}


def run_selftest(folder: Path) -> tuple[bool, dict]:
    """`python predict.py --selftest` in an isolated interpreter with an empty environment (PATH only)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-I", "predict.py", "--selftest"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=SELFTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, {"selftest": "FAILED", "error": f"the self-test took longer than {SELFTEST_TIMEOUT_S} s"}
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"selftest": "FAILED", "error": (done.stderr or done.stdout)[-500:]}
    return done.returncode == 0 and report.get("selftest") == "passed", report


def _zip(folder: Path, zip_path: Path, root: str) -> None:
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{root}/{path.relative_to(folder)}")
    tmp.replace(zip_path)
