"""Validation report: accuracy, per-class precision/recall/F1, confusion matrix, mistakes."""
from __future__ import annotations

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
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                        "f1": round(f1, 4), "support": support}
    return scores


def report(probs: np.ndarray, labels: np.ndarray, keys: list[str], classes: list[str]) -> dict:
    """Everything the results page shows about one model on one validation set."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return {"accuracy": None, "per_class": per_class_scores(np.zeros((len(classes),) * 2, int), classes),
                "confusion": [[0] * len(classes) for _ in classes], "mistakes": []}
    pred = probs.argmax(1)
    confusion = confusion_matrix(labels, pred, len(classes))
    mistakes = [{"key": keys[i], "true": classes[labels[i]], "predicted": classes[pred[i]],
                 "confidence": round(float(probs[i, pred[i]]), 4)}
                for i in np.flatnonzero(pred != labels)]
    mistakes.sort(key=lambda m: -m["confidence"])  # most confident errors first: likely label noise
    return {"accuracy": round(float((pred == labels).mean()), 4),
            "per_class": per_class_scores(confusion, classes),
            "confusion": confusion.tolist(), "mistakes": mistakes}


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())
