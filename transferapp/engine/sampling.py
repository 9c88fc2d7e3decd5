"""The one stratified sampler: a seeded, per-class shuffle of sample indices.

Splits (train/validation), cross-validation folds and the learning curve's subsets all take their
share of each class from the front of these orders, so they treat classes alike and one seed
reproduces every one of them.
"""
from __future__ import annotations

import numpy as np


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """For every class present, its sample indices in a random order fixed by `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def stratified_folds(labels: np.ndarray, seed: int, max_folds: int = 5) -> np.ndarray | None:
    """A fold number per sample, each class dealt round-robin; None when a class has < 2 samples."""
    labels = np.asarray(labels)
    k = min(max_folds, int(np.bincount(labels).min()))
    if k < 2:
        return None
    folds = np.zeros(len(labels), dtype=np.int64)
    for order in class_orders(labels, seed).values():
        folds[order] = np.arange(len(order)) % k
    return folds


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, minimum: int = 2) -> np.ndarray:
    """A 0/1 mask keeping the same share of every class (at least `minimum` of each)."""
    mask = np.zeros(len(labels), dtype=np.float64)
    for order in class_orders(labels, seed).values():
        mask[order[: max(minimum, round(len(order) * fraction))]] = 1.0
    return mask
