"""An export bundle: the model as ONNX plus a stand-alone predict.py (Pillow, numpy, onnxruntime),
and the proof that it predicts what the app predicts. No Django here.

model.onnx takes uint8 pixels, NCHW (batch, 3, crop, crop), RGB, already resized and centre-cropped
by predict.py, and returns probabilities (batch, classes). Normalisation, the mirror averaging the
app uses for the model (flip_tta) and the softmax are inside the graph; resizing stays outside in
Pillow, because an in-graph resize differs from Pillow's by up to 1/255 (DESIGN.md).
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

import torch
from PIL import Image
from torch import nn

from .data import load_rgb
from .predict import load_predictor
from .zoo import Averaged, average_probabilities

BUNDLE_TEMPLATE = Path(__file__).with_name("bundle")
SAMPLE_SIDE = 96  # samples are shrunk to this longer side: a small bundle, still real photos
SELFTEST_TIMEOUT_S = 300
OPSET = 17


class PixelsToProbabilities(nn.Module):
    """uint8 NCHW pixels -> probabilities, exactly as Predictor does after its ToTensor, including
    the temperature a fine-tuned model was calibrated with."""

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
        probs = self._probs(x)
        if self.flip_tta:
            probs = (probs + self._probs(torch.flip(x, dims=[3]))) / 2
        if self.quick is not None:
            quick = torch.softmax(self.quick.head(self.quick.body(x)), -1)
            probs = average_probabilities(probs, quick, self.member_temperatures)
        if self.temperature != 1.0:  # as calibrate.apply_temperature: on the averaged probabilities
            probs = torch.softmax(torch.log(probs.clamp_min(1e-12)) / self.temperature, -1)
        return probs


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
              "output": {"name": "probabilities", "shape": ["batch", len(predictor.classes)]}}
    q = _conformal_threshold(predictor, alpha)
    if q is not None:  # predict.py then answers with the app's prediction sets
        config["thresholds"] = {"alpha": alpha if alpha is not None else predictor.trust.default_alpha, "q": q}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "labels.json").write_text(json.dumps(predictor.classes, indent=2))
    (folder / "samples.json").write_text(json.dumps(_sample_expectations(predictor, samples, folder / "samples"), indent=1))
    shutil.copy(BUNDLE_TEMPLATE / "predict.py", folder / "predict.py")
    (folder / "requirements.txt").write_text("onnxruntime>=1.18\nnumpy>=1.26\npillow>=10.4\n")
    (folder / "README.md").write_text(card)
    passed, report = run_selftest(folder)
    zip_path = Path(out_dir) / "bundle.zip"
    _zip(folder, zip_path, root=name)
    return ExportResult(folder, zip_path, passed, report)


def _conformal_threshold(predictor, alpha: float | None) -> float | None:
    try:
        return predictor.trust.threshold(alpha)
    except ValueError:  # too few calibration images for this alpha: the model's own level
        return predictor.trust.threshold(None)


def write_onnx(predictor, path: Path) -> None:
    """The predictor's model as ONNX: uint8 NCHW pixels in, probabilities out (see the module docstring)."""
    prep = predictor.preprocessing
    model = predictor.model.to("cpu").float()
    wrapper = PixelsToProbabilities(model, prep, bool(model.flip_tta), predictor.trust.temperature).eval()
    example = torch.zeros(1, 3, prep["crop"], prep["crop"], dtype=torch.uint8)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, not broken (zoo.py does the same)
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["pixels"],
                          output_names=["probabilities"], dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}})


def _sample_expectations(predictor, samples, sample_dir: Path) -> list[dict]:
    """Shrink each sample, store it losslessly, and record what the app's own Predictor says about it."""
    rows = []
    for i, (name, source) in enumerate(samples):
        small = load_rgb(source)
        small.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.BICUBIC)
        file = f"{i:03d}.png"
        small.save(sample_dir / file)
        result = predictor.predict_images([load_rgb(sample_dir / file)])[0]  # the stored file, decoded as the app does
        rows.append({"file": file, "source": name, "top": result["top"], "probabilities": result["probabilities"]})
    return rows


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
