"""Heat maps: CAM is exact for the linear head, Grad-CAM agrees with it there, and the map follows
the object; the CLI writes one overlay per image."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from transferapp.engine import explain
from transferapp.engine.predict import Predictor
from transferapp.engine.zoo import Classifier, create_backbone

ROOT = Path(__file__).resolve().parents[2]
PREP = {"mean": [0.5] * 3, "std": [0.5] * 3, "resize": 256, "crop": 224, "interpolation": "bicubic"}


def _object_image(x: int, size: int = 256) -> Image.Image:
    """A plain grey field with one dark disc centred at column x."""
    img = Image.new("RGB", (size, size), (200, 200, 200))
    ImageDraw.Draw(img).ellipse([x - 24, size // 2 - 24, x + 24, size // 2 + 24], fill=(20, 20, 20))
    return img


@pytest.fixture(scope="module")
def object_predictor():
    """The bundled pretrained body with a linear head that scores "object" by the pooled feature
    that differs most between the disc image and the empty field: the features are real, the
    head is the simplest linear one that looks for the object."""
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", image_size=PREP["crop"])
    model = Classifier(backbone, 2, fp32_from=0).eval()
    predictor = Predictor(model, ["empty", "object"], PREP, torch.device("cpu"))
    empty, disc = Image.new("RGB", (256, 256), (200, 200, 200)), _object_image(128)
    with torch.inference_mode():
        feats = [model.body(predictor.transform(im)[None])[0] for im in (empty, disc)]
        weight = torch.zeros(2, backbone.feature_dim)
        weight[1] = torch.relu(feats[1] - feats[0])  # the disc's own features
        weight[0] = -weight[1]
        model.head.weight.copy_(weight)
        model.head.bias.zero_()
    return predictor


def test_cam_is_exact_its_mean_is_the_logit_less_the_bias(object_predictor):
    model = object_predictor.model
    results, (evidence,) = object_predictor.predict_explained([_object_image(70)])
    raw = explain._cam(model, evidence.maps, 1)[0]
    with torch.inference_mode():
        logit = model(object_predictor.transform(_object_image(70))[None])[0, 1]
    assert float(raw.mean()) == pytest.approx(float((logit - model.head.bias[1]).detach()), rel=1e-4, abs=1e-4)


def test_grad_cam_equals_cam_for_a_linear_head(object_predictor):
    model = object_predictor.model
    assert explain.cam_is_exact(model)
    _, evidence = object_predictor.predict_explained([_object_image(70), _object_image(190)])
    for ev in evidence:
        for c in (0, 1):
            cam = explain.class_map(model, ev, c, "cam")
            grad_cam = explain.class_map(model, ev, c, "gradcam")
            assert np.abs(cam - grad_cam).max() < 1e-4
    assert explain.class_map(model, evidence[0], 1).max() == pytest.approx(1.0)  # a map worth comparing


def _centre_of_heat(heat: np.ndarray) -> float:
    cols = np.arange(heat.shape[1])
    return float((heat.sum(0) * cols).sum() / heat.sum())


def test_the_heat_map_moves_with_the_object(object_predictor):
    (left, right), evidence = object_predictor.predict_explained([_object_image(60), _object_image(196)])
    assert left["top"] == right["top"] == "object"
    maps = [object_predictor.heat_map(ev, "object") for ev in evidence]
    middle = (maps[0].shape[1] - 1) / 2  # in feature cells (7 across a 224 px crop)
    assert _centre_of_heat(maps[0]) < middle - 1 and _centre_of_heat(maps[1]) > middle + 1


def test_a_mirrored_view_is_mirrored_back_before_averaging(object_predictor):
    model = object_predictor.model
    model.flip_tta = True
    try:
        _, (evidence,) = object_predictor.predict_explained([_object_image(60)])
    finally:
        model.flip_tta = False
    assert evidence.maps.shape[0] == 2  # the image and its mirror, from predict_proba's two passes
    heat = object_predictor.heat_map(evidence, "object")
    assert _centre_of_heat(heat) < (heat.shape[1] - 1) / 2 - 1


def test_the_overlay_covers_the_centre_crop_and_darkens_the_margins():
    image = Image.new("RGB", (600, 300), (200, 200, 200))
    heat = np.zeros((7, 7), np.float32)
    heat[:, 0] = 1.0  # hot on the crop's left edge only
    out = np.asarray(explain.overlay(image, heat, PREP)).astype(int)
    assert out.shape == (256, 512, 3)  # the image as the model resized it (shorter side 256)
    left, top = (512 - 224) // 2, (256 - 224) // 2
    assert (out[:, : left - 1] < 80).all() and (out[:top - 1] < 80).all()  # cut off by the crop: dark
    assert abs(out[top + 112, left + 150] - 200).max() <= 1  # cold inside the crop: the image itself
    assert out[top + 112, left + 2, 2] < 120 and out[top + 112, left + 2, 0] > 180  # hot: red over grey


def test_the_cli_writes_one_overlay_per_image(shapes_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def engine(*args):
        done = subprocess.run([sys.executable, "-m", "transferapp.engine", "--threads", "2", *args],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    engine("train", str(shapes_dir), "--out", str(tmp_path / "art"), "--preset", "fast", "--image-size", "64")
    images = sorted(shapes_dir.rglob("*.png"))[:2]
    lines = engine("predict", str(tmp_path / "art"), *map(str, images), "--heatmap", str(tmp_path / "maps"))
    assert [Path(line["heatmap"]).name for line in lines] == [p.stem + ".png" for p in images]
    for line in lines:
        with Image.open(line["heatmap"]) as im:
            assert im.format == "PNG" and min(im.size) == 73  # shorter side = the model's resize for 64 px


def test_the_upsampling_matches_torch_bilinear():
    import torch.nn.functional as F
    heat = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(heat)[None, None], size=(224, 200), mode="bilinear",
                             align_corners=False)[0, 0].numpy()
    assert np.abs(explain._upsample(heat, 224, 200) - expected).max() < 1e-5


def test_fine_tuned_models_and_tails_that_are_not_linear_use_grad_cam(object_predictor):
    from types import SimpleNamespace

    from torch import nn
    model = object_predictor.model
    assert explain.method_for(model, finetuned=False) == "cam"
    assert explain.method_for(model, finetuned=True) == "gradcam"
    # ConvNeXt's shape: a normalisation after the pooling, so CAM would not be exact.
    toy = SimpleNamespace(body=nn.Sequential(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.GroupNorm(1, 8), nn.Flatten(1))),
                          head=nn.Linear(8, 2))
    assert not explain.cam_is_exact(toy) and explain.method_for(toy, finetuned=False) == "gradcam"
    maps = torch.zeros(1, 8, 4, 4)
    maps[0, :, :, 0] = torch.arange(8.0)[:, None]  # only the left column carries anything
    heat = explain.class_map(toy, explain.Evidence(maps), 0, "gradcam")
    assert heat.shape == (4, 4) and np.isfinite(heat).all()


def test_web_threads_sharing_a_predictor_get_their_own_heat_maps(object_predictor):
    """The web process's threads share one Predictor: each request's maps and novelty features
    must be its own, whatever runs beside it (batches of different sizes crashed, equal ones mixed)."""
    from concurrent.futures import ThreadPoolExecutor

    requests = [[_object_image(x)] * n for x, n in ((40, 1), (90, 2), (150, 3), (200, 1), (128, 2), (60, 3))] * 3
    alone = [object_predictor.predict_explained(images) for images in requests]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(object_predictor.predict_explained, requests))
    for (results_a, maps_a), (results_b, maps_b) in zip(alone, together):
        assert [r["top"] for r in results_a] == [r["top"] for r in results_b]
        assert [r["novelty"] for r in results_a] == [r["novelty"] for r in results_b]
        for a, b in zip(maps_a, maps_b):
            assert torch.allclose(a.maps, b.maps, atol=1e-5)
