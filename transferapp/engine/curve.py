""""Will more data help?": validation accuracy when training on growing shares of the training set.

Cheap because it works on the cached features: every (share, seed) subset is one problem of a
single batched logistic-regression solve, with the regularisation stage 1 chose.
"""
from __future__ import annotations

import numpy as np
import torch

from .head import LogregProblem, solve_logreg
from .sampling import stratified_subset

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
SEEDS = (0, 1, 2)
# Accuracy gained from half to all of the images, above which we call the curve still rising.
RISING_GAIN = 0.02


def learning_curve(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   classes: list[str], *, C: float, fractions=FRACTIONS, seeds=SEEDS) -> dict:
    """Mean validation accuracy (overall and per class) per share of the training images."""
    n_classes = len(classes)
    plans = [(f, s) for f in fractions for s in seeds]
    masks = np.stack([stratified_subset(y_train, f, s) for f, s in plans])
    correct = _fit_and_score(x_train, y_train, x_val, y_val, masks, C, n_classes)  # [P, n_val]
    accuracy, per_class = _summarise(correct, y_val, plans, fractions, classes)
    curve = {
        "fractions": list(fractions),
        "n_train": [int(masks[i * len(seeds)].sum()) for i in range(len(fractions))],
        "accuracy": accuracy,
        "per_class": per_class,
    }
    curve.update(verdict(curve))
    return curve


def learning_curve_out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray, classes: list[str], *, C: float,
                               fractions=FRACTIONS, seeds=SEEDS) -> dict:
    """The same curve for a project too small for a validation split (train.fit's out-of-fold
    figures): each fold's images are scored by models trained on shares of the other folds' images,
    so every image is scored once per share and seed. Still one batched solve."""
    n_classes, k = len(classes), int(folds.max()) + 1
    plans, masks, held = [], [], []
    for fraction in fractions:
        for seed in seeds:
            for fold in range(k):
                inside = np.flatnonzero(folds != fold)
                mask = np.zeros(len(y))
                mask[inside] = stratified_subset(y[inside], fraction, seed)
                plans.append((fraction, seed))
                masks.append(mask)
                held.append(folds == fold)
    masks, held = np.stack(masks), np.stack(held)
    correct = np.where(held, _fit_and_score(x, y, x, y, masks, C, n_classes), np.nan)  # [P, n]: held-out only
    accuracy, per_class = _summarise(correct, y, plans, fractions, classes)
    per_share = len(seeds) * k
    curve = {"fractions": list(fractions), "out_of_fold": True,
             "n_train": [int(round(masks[i * per_share:(i + 1) * per_share].sum(1).mean())) for i in range(len(fractions))],
             "accuracy": accuracy, "per_class": per_class}
    curve.update(verdict(curve))
    return curve


def _fit_and_score(x_train, y_train, x_val, y_val, masks, C, n_classes) -> np.ndarray:
    problem = LogregProblem.from_features(x_train, y_train, n_classes)
    M = torch.as_tensor(masks, dtype=problem.Xs.dtype)
    W, b = solve_logreg(problem.Xs, problem.Y, problem.w, M, torch.full((len(M),), C, dtype=M.dtype), n_classes)
    V = problem.standardise(x_val)
    predicted = (torch.einsum("nd,pdk->pnk", V, W) + b[:, None]).argmax(-1).numpy()
    return predicted == y_val[None, :]


def _summarise(correct, y_val, plans, fractions, classes):
    accuracy, per_class = [], {name: [] for name in classes}
    for fraction in fractions:
        rows = correct[[i for i, (f, _) in enumerate(plans) if f == fraction]]  # NaN: not scored by that model
        accuracy.append(round(float(np.nanmean(rows)), 4))
        for c, name in enumerate(classes):
            members = y_val == c
            per_class[name].append(round(float(np.nanmean(rows[:, members])), 4) if members.any() else None)
    return accuracy, per_class


def verdict(curve: dict, kept_recall: dict | None = None) -> dict:
    """A plain-language reading of the curve, and the class that would gain most from more images.
    `kept_recall` (per-class recall of the model the page reports) names the weakest class, so the
    advice describes that model rather than the curve's quick ones."""
    half = curve["fractions"].index(0.5) if 0.5 in curve["fractions"] else len(curve["fractions"]) // 2
    gain = curve["accuracy"][-1] - curve["accuracy"][half]
    gains = {
        name: values[-1] - values[half]
        for name, values in curve["per_class"].items()
        if values[-1] is not None and values[half] is not None
    }
    final = {n: (kept_recall or {}).get(n, v[-1]) for n, v in curve["per_class"].items()}
    weakest = min(final, key=lambda n: final[n] if final[n] is not None else 2)
    if gain >= RISING_GAIN:
        most = max(gains, key=gains.get) if gains else weakest
        text = (f"Accuracy is still rising ({gain * 100:+.1f} points from half to all of your images): "
                f"more images would help, most of all more images of “{most}”.")
        return {"rising": True, "help_most": most, "verdict": text}
    text = (f"Accuracy has levelled off ({gain * 100:+.1f} points from half to all of your images): "
            "more images of the same kind are unlikely to help much.")
    if final[weakest] is not None and final[weakest] < 0.9:
        text += f" “{weakest}” is the weakest class: check its mistakes, or add more varied images of it."
    return {"rising": False, "help_most": weakest, "verdict": text}
