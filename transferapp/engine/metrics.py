"""Evaluation report: accuracy with its evidence (n, Wilson interval, balanced accuracy, the
majority-class baseline), per-class precision/recall/F1, confusion matrix, mistakes."""
from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def per_class_scores(confusion: np.ndarray, classes: list[str]) -> dict:
    scores = {}
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        predicted, support = int(confusion[:, i].sum()), int(confusion[i].sum())
        # None, not 0: a class with no evaluation images (or never predicted) was not measured.
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = (2 * precision * recall / (precision + recall) if precision + recall else 0.0) \
            if precision is not None and recall is not None else None
        scores[name] = {"precision": _r(precision), "recall": _r(recall), "f1": _r(f1), "support": support}
    return scores


def report(probs: np.ndarray, labels: np.ndarray, keys: list[str], classes: list[str], *, ordered: bool = False) -> dict:
    """Everything the results page shows about one model on one validation set. `ordered`: the
    classes are grades listed lowest first, so the figures add how far off the wrong answers are."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {**(ordinal_scores(labels, labels) if ordered else {}),"accuracy": None, "per_class": per_class_scores(np.zeros((len(classes),) * 2, int), classes),
                "confusion": [[0] * len(classes) for _ in classes], "mistakes": [], "eval_predictions": [], **evidence(labels, labels, classes)}
    pred = probs.argmax(1)
    confusion = confusion_matrix(labels, pred, len(classes))
    mistakes = [{"key": keys[i], "true": classes[labels[i]], "predicted": classes[pred[i]],
                 "confidence": round(float(probs[i, pred[i]]), 4)}
                for i in np.flatnonzero(pred != labels)]
    mistakes.sort(key=lambda m: -m["confidence"])  # most confident errors first: likely label noise
    return {**(ordinal_scores(labels, pred) if ordered else {}),
            "accuracy": round(float((pred == labels).mean()), 4),
            "per_class": per_class_scores(confusion, classes),
            "confusion": confusion.tolist(), "mistakes": mistakes, **evidence(labels, pred, classes),
            "confusion_keys": _cell_keys(labels, pred, keys, len(classes)),
            "eval_predictions": _image_predictions(probs, labels, pred, keys)}


def _image_predictions(probs, labels, pred, keys) -> list[list]:
    """[key, true index, predicted index, confidence] for every scored image: what the version
    diff compares image by image (the cells above carry no confidence for the right answers)."""
    return [[str(key), int(t), int(p), round(float(probs[i, p]), 4)]
            for i, (key, t, p) in enumerate(zip(keys, labels, pred))]


def _cell_keys(labels, pred, keys, n_classes) -> list[list[list[str]]]:
    """The images behind every confusion-matrix cell, so the page can open a cell."""
    cells = [[[] for _ in range(n_classes)] for _ in range(n_classes)]
    for t, p, key in zip(labels, pred, keys):
        cells[int(t)][int(p)].append(str(key))
    return cells


def _r(v):
    return None if v is None else round(v, 4)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval for a proportion: sensible at 0 and n, unlike the normal one."""
    if n == 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evidence(labels: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """What an accuracy rests on: how many images, how uncertain, and what guessing would score."""
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = len(labels)
    correct = int((labels == pred).sum())
    ci = wilson_interval(correct, n)
    present = [c for c in range(len(classes)) if (labels == c).any()]
    recalls = [float((pred[labels == c] == c).mean()) for c in present]
    counts = np.bincount(labels, minlength=len(classes))
    majority = int(counts.argmax()) if n else None
    out = {"n_scored": n, "n_correct": correct,
           "accuracy_ci": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
           "balanced_accuracy": round(sum(recalls) / len(recalls), 4) if recalls else None,
           "baseline": {"class": classes[majority], "accuracy": round(float(counts[majority] / n), 4)} if n else None}
    if len(classes) == 2:
        out["binary"] = {name: binary_rates(labels, pred, c) for c, name in enumerate(classes)}
    return out


def ordinal_scores(labels: np.ndarray, pred: np.ndarray) -> dict:
    """For grades (class index = rank): the mean absolute grade error in grade steps, and the share
    of answers at most one grade off, with its n and Wilson interval like every other proportion."""
    labels, pred = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    off = np.abs(labels - pred)
    n = len(off)
    return {"mean_abs_grade_error": {"value": round(float(off.mean()), 4) if n else None, "n": n},
            "within_one_grade": rate(int((off <= 1).sum()), n)}


def binary_rates(labels: np.ndarray, pred: np.ndarray, positive: int) -> dict:
    """Sensitivity (positives found) and specificity (negatives left alone), each with n and interval."""
    pos, neg = labels == positive, labels != positive
    tp, tn = int((pred[pos] == positive).sum()), int((pred[neg] != positive).sum())
    return {"sensitivity": rate(tp, int(pos.sum())), "specificity": rate(tn, int(neg.sum()))}


def rate(k: int, n: int) -> dict:
    """A proportion with its n and 95% Wilson interval, as every figure on the pages shows it."""
    ci = wilson_interval(k, n)
    return {"value": round(k / n, 4) if n else None, "k": k, "n": n,
            "ci": [round(ci[0], 4), round(ci[1], 4)] if ci else None}


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())
