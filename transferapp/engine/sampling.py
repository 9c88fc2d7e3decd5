"""The one stratified sampler: a seeded, per-class shuffle of sample indices.

Splits (train/validation), cross-validation folds and the learning curve's subsets all take their
share of each class from the front of these orders, so they treat classes alike and one seed
reproduces every one of them.

Splits and folds keep groups whole (one patient's two knees, follow-up scans, near-identical
copies): an image scored by a model that trained on its twin gets an optimistic score, and every
figure built on such scores (the choice of C, conformal thresholds, mislabel ranks) inherits it.
"""
from __future__ import annotations

import numpy as np


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """For every class present, its sample indices in a random order fixed by `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def group_leaders(groups) -> np.ndarray:
    """For each sample, the index of the first sample of its group; None or "" = a group of its own."""
    if groups is None:
        return None
    first: dict[str, int] = {}
    return np.array([first.setdefault(g, i) if g else i for i, g in enumerate(groups)], dtype=np.int64)


def stratified_folds(labels: np.ndarray, seed: int, max_folds: int = 5, groups=None) -> np.ndarray | None:
    """A fold number per sample, each class dealt round-robin (whole groups dealt by their first
    member's class); None when a class has fewer than 2 samples (or groups)."""
    labels = np.asarray(labels)
    leaders = group_leaders(groups)
    if leaders is not None:
        leaders = _dissolve_lone_groups(labels, leaders)
    heads = np.arange(len(labels)) if leaders is None else np.unique(leaders)
    k = min(max_folds, int(np.unique(labels[heads], return_counts=True)[1].min())) if len(heads) else 0
    if k < 2:
        return None
    head_fold = np.zeros(len(heads), dtype=np.int64)
    for order in class_orders(labels[heads], seed).values():
        head_fold[order] = np.arange(len(order)) % k
    if leaders is None:
        return head_fold
    fold_of = dict(zip(heads.tolist(), head_fold.tolist()))
    return np.array([fold_of[int(leader)] for leader in leaders], dtype=np.int64)


def _dissolve_lone_groups(labels: np.ndarray, leaders: np.ndarray) -> np.ndarray:
    """A class whose images form a single group (one patient) cannot be dealt to two folds whole:
    only that class's group is split into single images, and every other class keeps its groups
    (an out-of-fold estimate for that class, optimistic as it is, beats none)."""
    heads = np.unique(leaders)
    lone = [c for c in np.unique(labels) if np.sum(labels[heads] == c) < 2]
    if not lone:
        return leaders
    leaders = leaders.copy()
    dissolve = np.isin(labels[leaders], lone)
    leaders[dissolve] = np.flatnonzero(dissolve)
    return leaders


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, minimum: int = 2) -> np.ndarray:
    """A 0/1 mask keeping the same share of every class (at least `minimum` of each)."""
    mask = np.zeros(len(labels), dtype=np.float64)
    for order in class_orders(labels, seed).values():
        mask[order[: max(minimum, round(len(order) * fraction))]] = 1.0
    return mask
