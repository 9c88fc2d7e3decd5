"""The web predictor and the engine decode a file the same way, so the accuracy measured in training
is the accuracy of the predictions the app serves."""
import io

import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.factories import project_with_images
from transferapp.engine.config import TrainConfig
from transferapp.engine.data import Sample
from transferapp.engine.fitting import fit
from transferapp.engine.predict import load_predictor
from transferapp.library import images as library_images
from transferapp.models import TrainingRun
from transferapp.serving import predictions

pytestmark = pytest.mark.django_db


def _large_photo_jpeg(size=(2400, 1800)) -> bytes:
    """A big detailed photo-like JPEG: draft-mode decoding (1/8 scale) changes its pixels."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    # Between the two classes' colours (red and blue), so the model is unsure and its
    # probabilities are not saturated at 0 and 1; fine stripes and noise make the decode matter.
    stripes = ((x // 3 + y // 5) % 2)[..., None]
    base = np.where(stripes, [200, 40, 90], [90, 50, 200])
    noisy = np.clip(base + rng.normal(0, 50, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _trained_run(project, tmp_path) -> TrainingRun:
    images = list(project.images.select_related("label"))
    classes = sorted({im.label.name for im in images})
    samples = [Sample(im.file.path, classes.index(im.label.name), str(im.pk)) for im in images]
    config = TrainConfig(preset="fast", refit=False)
    fit(samples[::2], samples[1::2], classes, config, tmp_path / "artifact", cache_dir=tmp_path / "cache")
    _soften(tmp_path / "artifact" / "model.pt")
    return TrainingRun.objects.create(project=project, status="succeeded", base_model=config.base,
                                      classes=classes, artifact_dir=str(tmp_path / "artifact"))


def _soften(model_file) -> None:
    """Scale the head's logits down: a model trained on eight flat images is certain of everything,
    and probabilities stuck at 0 and 1 would hide any difference between two decodes."""
    state = torch.load(model_file, weights_only=True)
    state["head.weight"] *= 1e-3
    state["head.bias"] *= 1e-3
    torch.save(state, model_file)


def test_the_in_app_prediction_of_a_large_jpeg_equals_the_engine_prediction_on_the_stored_file(user, tmp_path):
    project = project_with_images(user, per_class=4)
    run = _trained_run(project, tmp_path)
    data = _large_photo_jpeg()
    stored = library_images.image_add(label=project.labels.first(), name="big.jpg", data=data).image
    assert stored is not None
    in_app = predictions.predict_uploaded(run, SimpleUploadedFile("big.jpg", data, content_type="image/jpeg"))
    engine = load_predictor(run.artifact_dir).predict_paths([stored.file.path])[0]
    web = {row["label"]: row["p"] for row in in_app["ranked"]}
    assert web.keys() == engine["probabilities"].keys()
    for label, p in engine["probabilities"].items():
        assert abs(web[label] - p) < 1e-6, (label, web[label], p)
