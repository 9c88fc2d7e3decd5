"""Samples, deterministic splits, image loading and the transforms built from a base's preprocessing."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torchvision import transforms as T

from . import imaging
from .imaging import load_rgb  # noqa: F401 (the one decode path, re-exported for the engine's modules)
from .sampling import class_orders

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm", ".dicom"}
_VAL_DIR_NAMES = ("val", "valid", "validation", "test")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    key: str  # the caller's id: a Django image pk as str, or a relative path in the CLI
    # Images that must stay on one side of every split and fold (one patient, near-identical
    # copies); "" = the image is a group of its own.
    group: str = ""


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per-class shuffle with a fixed seed; every class with >= 2 images (groups) gets >= 1 val and
    >= 1 train. A group goes whole to the side its first member (by key) is dealt to."""
    members: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (s.label, s.key, s.path)):
        members.setdefault(s.group or s.key, []).append(s)
    heads = [group[0] for group in members.values()]
    train, val = [], []
    for order in class_orders(np.array([s.label for s in heads], dtype=np.int64), seed).values():
        n_val = 0 if len(order) < 2 else min(len(order) - 1, max(1, round(len(order) * val_fraction)))
        for rank, i in enumerate(order):
            (val if rank < n_val else train).extend(members[heads[i].group or heads[i].key])
    return train, val


def smallest_class(labels) -> int:
    """Images in the smallest class present (0 for none): the size small_data_below is compared with."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    present = counts[counts > 0]
    return int(present.min()) if len(present) else 0


def is_small_data(samples: list[Sample], below: int) -> bool:
    """Fewer than `below` images in the smallest class (TrainConfig.small_data_below)."""
    return smallest_class([s.label for s in samples]) < below


def development_split(samples: list[Sample], config) -> tuple[list[Sample], list[Sample]]:
    """(training, validation) for a run that makes its own split: stratified_split, except for a
    small project (is_small_data), which keeps every image for training and is estimated out-of-fold."""
    if is_small_data(samples, config.small_data_below):
        return list(samples), []
    return stratified_split(samples, config.val_fraction, config.seed)


def grouped_by_name(samples: list[Sample], pattern: str | None) -> list[Sample]:
    """Samples whose group is the part of the file name the regular expression matches (its first
    capture group when it has one), e.g. r"^\\d+" for "9004315L.png" and "9004315R.png": one patient.
    A name it does not match stays a group of its own."""
    if not pattern:
        return samples
    try:
        rule = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--group-pattern {pattern!r} is not a regular expression: {exc}") from None

    def group(name: str) -> str:
        found = rule.search(name)
        return (found.group(1) if rule.groups else found.group(0)) if found else ""

    return [replace(s, group=group(Path(s.path).name)) for s in samples]


def is_image_file(path: Path) -> bool:
    """By extension, or by content for DICOM files exported without one (e.g. IM000001)."""
    if not path.is_file() or path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or (not path.suffix and imaging.is_dicom_path(path))


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


def train_transform(prep: dict, augmentation: str, mirror: bool = True) -> T.Compose:
    """`mirror=False` for images that must not be mirrored (see TrainConfig.no_mirroring)."""
    if augmentation == "none":
        return eval_transform(prep)
    min_scale, jitter = _AUGMENT[augmentation]
    steps = [T.RandomResizedCrop(prep["crop"], scale=(min_scale, 1.0), interpolation=_interp(prep))]
    if mirror:
        steps.append(T.RandomHorizontalFlip())
    if jitter:
        steps.append(T.ColorJitter(jitter, jitter, jitter))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(prep["mean"], prep["std"])])


def _interp(prep: dict):
    return T.InterpolationMode.BICUBIC if prep.get("interpolation") == "bicubic" else T.InterpolationMode.BILINEAR
