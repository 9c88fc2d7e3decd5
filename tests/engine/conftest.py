"""Tiny generated image sets so engine tests run offline in seconds (no Django here)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from transferapp.engine import TrainConfig

COLOURS = {"red_circle": (220, 40, 40), "green_square": (40, 200, 60), "blue_triangle": (40, 70, 220)}


def draw_shape(kind: str, seed: int, size: int = 48) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    colour = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLOURS[kind])
    if kind == "red_circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "green_square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def make_dataset(root: Path, per_class: dict[str, int] | int = 6, fmt: str = "PNG") -> Path:
    for i, kind in enumerate(COLOURS):
        n = per_class if isinstance(per_class, int) else per_class.get(kind, 0)
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            draw_shape(kind, seed=1000 * i + j).save(folder / f"{kind}_{j}.{fmt.lower()}", fmt)
    return root


@pytest.fixture(autouse=True)
def private_storage(tmp_path):
    """Overrides tests/conftest.py's Django-settings fixture: engine tests run without Django."""
    return tmp_path


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def small_config() -> TrainConfig:
    # 64 px keeps every forward pass cheap; "fast" = stage 1 only.
    return TrainConfig(preset="fast", image_size=64, batch_size=8, epochs=2)
