"""Samples, deterministic splits, image loading and the transforms built from a base's preprocessing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from torchvision import transforms as T

from .sampling import class_orders

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_VAL_DIR_NAMES = ("val", "valid", "validation", "test")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    key: str  # the caller's id: a Django image pk as str, or a relative path in the CLI


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per-class shuffle with a fixed seed; every class with >= 2 images gets >= 1 val and >= 1 train."""
    ordered = sorted(samples, key=lambda s: (s.label, s.key, s.path))
    train, val = [], []
    for order in class_orders(np.array([s.label for s in ordered], dtype=np.int64), seed).values():
        group = [ordered[i] for i in order]
        n_val = 0 if len(group) < 2 else min(len(group) - 1, max(1, round(len(group) * val_fraction)))
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def load_rgb(path, size: int | None = None) -> Image.Image:
    """Decode any image as upright RGB; with `size`, JPEG draft mode decodes at a reduced scale
    (never below `size` on the short side), which is several times faster for large photos."""
    with Image.open(path) as img:
        if size and img.format == "JPEG":
            img.draft("RGB", (size, size))
        img = to_rgb(img)
        img.load()
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB whatever the mode (palette, alpha, CMYK, 16-bit grey) and EXIF orientation:
    the one conversion used for thumbnails, training and prediction alike."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit scans: scale 0-65535 to 0-255 (a plain convert clips nearly everything to white).
        img = img.point(lambda value: value / 256).convert("L")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        # Flatten transparency onto white rather than letting it turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def folder_samples(data_dir) -> tuple[list[str], list[Sample], list[Sample] | None]:
    """Class-per-folder data: DATA/<class>/*, or DATA/train/<class>/* with DATA/val (or test)/<class>/*."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"Data folder not found: {root}")
    val_dir = next((root / n for n in _VAL_DIR_NAMES if (root / n).is_dir()), None)
    train_dir = root / "train" if (root / "train").is_dir() and val_dir else root
    classes = _class_names(train_dir)
    if len(classes) < 2:
        raise ValueError(f"Need at least two class folders with images in {train_dir} (found {classes})")
    train = _samples_in(train_dir, classes, root)
    val = _samples_in(val_dir, classes, root) if train_dir is not root else None
    return classes, train, val


def _class_names(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and any(is_image_file(p) for p in d.iterdir()))


def _samples_in(folder: Path, classes: list[str], root: Path) -> list[Sample]:
    samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for p in sorted(class_dir.iterdir()):
            if is_image_file(p):
                samples.append(Sample(str(p), label, str(p.relative_to(root))))
    return samples


# --- transforms ----------------------------------------------------------------------------

def eval_transform(prep: dict) -> T.Compose:
    return T.Compose([
        T.Resize(prep["resize"], interpolation=_interp(prep)),
        T.CenterCrop(prep["crop"]),
        T.ToTensor(),
        T.Normalize(prep["mean"], prep["std"]),
    ])


# Random-resized-crop minimum scale and colour jitter per strength; "none" is the eval transform.
_AUGMENT = {"light": (0.6, 0.0), "medium": (0.35, 0.1), "strong": (0.2, 0.3)}


def train_transform(prep: dict, augmentation: str) -> T.Compose:
    if augmentation == "none":
        return eval_transform(prep)
    min_scale, jitter = _AUGMENT[augmentation]
    steps = [T.RandomResizedCrop(prep["crop"], scale=(min_scale, 1.0), interpolation=_interp(prep)),
             T.RandomHorizontalFlip()]
    if jitter:
        steps.append(T.ColorJitter(jitter, jitter, jitter))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(prep["mean"], prep["std"])])


def _interp(prep: dict):
    return T.InterpolationMode.BICUBIC if prep.get("interpolation") == "bicubic" else T.InterpolationMode.BILINEAR
