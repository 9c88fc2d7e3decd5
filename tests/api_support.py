"""Shared set-up for the API and export tests: photo-like images, a project trained by a real worker."""
import io

import django_rq
import numpy as np
from PIL import Image, ImageFilter
from rq import SimpleWorker

from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import TrainingRun
from transferapp.training import runs as training_runs

# Per class: a base hue the textures are built around, so a fast linear head can tell them apart.
CLASS_TINTS = {"meadow": (70, 150, 60), "sea": (40, 90, 170), "sand": (200, 170, 110)}


def photo_bytes(kind: str, seed: int, size=(88, 72), fmt="JPEG") -> bytes:
    """A small photo-like image: smooth random texture with a gradient and noise, per-class tint."""
    rng = np.random.default_rng(seed * 31 + len(kind))
    w, h = size
    coarse = rng.normal(0, 40, (h // 8 + 1, w // 8 + 1, 3))
    texture = np.asarray(Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), float) - 128
    gradient = np.linspace(-30, 30, h)[:, None, None]
    pixels = np.array(CLASS_TINTS[kind], float) + texture + gradient + rng.normal(0, 6, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90)
    return out.getvalue()


def photo_project(owner, *, per_class=8, name="Landscapes"):
    project = library_projects.project_create(owner=owner, name=name)
    for kind in CLASS_TINTS:
        label = library_projects.label_create(project=project, name=kind)
        for i in range(per_class):
            outcome = library_images.image_add(label=label, name=f"{kind}-{i}.jpg", data=photo_bytes(kind, i))
            assert outcome.image is not None, outcome.error
    return project


def work_off_queue(*queues):
    django_rq.get_worker(*(queues or ("default",)), worker_class=SimpleWorker).work(burst=True)


def train_version(project, preset="fast") -> TrainingRun:
    """A real training run through the service and a real worker; returns the succeeded run."""
    run = training_runs.training_start(project=project, base_model="efficientnet_lite0", preset=preset, config={})
    work_off_queue()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run
