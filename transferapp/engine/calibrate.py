"""Answers that say how sure they are: out-of-fold probabilities, split-conformal prediction sets,
temperature scaling, a feature-space novelty check, and the images whose labels look wrong.

Everything here works on arrays (cached features, probabilities); no images, no Django.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .head import cross_fit

DEFAULT_ALPHA = 0.1
# Nearest training images a new image is compared with; their mean cosine distance is its novelty.
# A new image is "unlike the training images" when it is farther from them than this share of the
# training images were from the other folds. Measured on flowers (bench/trust_bench.py's images):
# k=5 at 0.99 let 10-20% of brick and knee X-ray images through; k=10 at 0.98 refused all 80 of
# them and 1% of flowers' own val/ images.
NOVELTY_K = 10
NOVELTY_QUANTILE = 0.98
# The bank of training features kept in the artifact (float16): enough for kNN, a few MB at most.
MAX_BANK = 4000
SUSPECTS_KEPT = 50
MISLABEL_REPEATS = 3


# --- out-of-fold probabilities --------------------------------------------------------------

def oof_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, seed: int = 0, groups=None):
    """(probabilities [n, k], folds [n]): every image scored by the stage-1 logistic regression fitted
    on the other folds (a group never on both sides). (None, None) with < 2 images a class."""
    fitted = cross_fit(x, y, n_classes, C, seed, groups)
    return (fitted.probs, fitted.folds) if fitted else (None, None)


def repeated_oof(first: np.ndarray, x, y, *, n_classes: int, C: float, seed: int, groups, repeats: int = MISLABEL_REPEATS):
    """Out-of-fold probabilities averaged over `repeats` fold draws (the first is the calibration's
    own): which images share a fold with an image decides a lot when the model is weak (knee
    X-rays, 10% flipped labels: 6 to 9 true flips in the top 10 across five single draws, 8 for the
    average of three), and a user should not get a different list from a different seed."""
    more = (cross_fit(x, y, n_classes, C, seed + r, groups) for r in range(1, repeats))
    return np.mean([first] + [fitted.probs for fitted in more if fitted is not None], axis=0)


# --- split conformal ------------------------------------------------------------------------

def nonconformity(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return 1.0 - probs[np.arange(len(labels)), labels]


def min_alpha(n: int) -> float:
    return 1.0 / (n + 1)


def conformal_threshold(scores: np.ndarray, alpha: float) -> float:
    """The ⌈(n+1)(1−α)⌉-th smallest score: sets {y: 1 − p(y) <= q} then hold the true class with
    probability >= 1 − α on average over images like the calibration ones."""
    n = len(scores)
    if not 0 < alpha < 1:
        raise ValueError("The risk level must be between 0 and 1.")
    if n == 0 or alpha < min_alpha(n):
        raise ValueError(f"A risk level of {alpha:g} needs at least {math.ceil(1 / alpha - 1)} calibration images "
                         f"(this model has {n}); choose {min_alpha(n):.3g} or more.")
    rank = math.ceil((n + 1) * (1 - alpha))
    return float(np.sort(scores)[rank - 1])


def prediction_sets(probs: np.ndarray, q: float) -> list[list[int]]:
    """Class indices in each set, most probable first. Never empty: when the model is more accurate
    than 1 − α the threshold leaves some sets empty, which would spend the risk budget on refusing
    easy images; the top class is kept instead (coverage can only rise)."""
    sets = []
    for row in probs:
        members = np.flatnonzero(1.0 - row <= q + 1e-12)
        members = members if len(members) else np.array([int(row.argmax())])
        sets.append([int(i) for i in members[np.argsort(-row[members])]])
    return sets


def set_quality(probs: np.ndarray, labels: np.ndarray, q: float) -> dict:
    """Measured coverage, mean set size and the share of single-label answers."""
    sets = prediction_sets(probs, q)
    n = len(sets)
    if n == 0:
        return {"coverage": None, "mean_set_size": None, "singleton_share": None, "n": 0}
    return {"coverage": round(sum(int(y) in s for s, y in zip(sets, labels)) / n, 4),
            "mean_set_size": round(sum(len(s) for s in sets) / n, 3),
            "singleton_share": round(sum(len(s) == 1 for s in sets) / n, 4), "n": n}


def answer_text(names: list[str], unfamiliar: bool = False) -> str:
    """The words the predict page and the CLI give for a prediction set."""
    if unfamiliar:
        return "Don't know — this image is unlike the training images"
    if len(names) == 1:
        return f"Likely {names[0]}"
    if not names:
        return "Don't know — no class fits well"
    return f"{', '.join(names[:-1])} or {names[-1]} — please check"


# --- temperature scaling and reliability ----------------------------------------------------

def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising log loss of softmax(log p / T): for fine-tuned networks trained with label
    smoothing and balanced classes, whose raw outputs are not probabilities."""
    if len(labels) < 2:
        return 1.0
    logp = torch.as_tensor(np.log(np.clip(probs, 1e-12, 1)), dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    grid = torch.exp(torch.linspace(math.log(0.05), math.log(20), 241, dtype=torch.float64))
    losses = [torch.nn.functional.cross_entropy(logp / t, y).item() for t in grid]
    return round(float(grid[int(np.argmin(losses))]), 4)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1)) / temperature
    logits -= logits.max(-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """Per confidence bin: mean confidence, accuracy, count; and the expected calibration error."""
    if len(labels) == 0:
        return {"bins": [], "ece": None, "n": 0}
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        members = which == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.mean() * abs(conf - acc)
        bins.append({"low": round(float(edges[b]), 2), "high": round(float(edges[b + 1]), 2),
                     "confidence": round(conf, 4), "accuracy": round(acc, 4), "count": int(members.sum())})
    return {"bins": bins, "ece": round(float(ece), 4), "n": int(len(labels))}


# --- novelty: "unlike anything in training" -------------------------------------------------

def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def knn_distance(query: np.ndarray, bank: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine distance from each (normalised) query row to its k nearest bank rows; `allowed`
    [n_query, n_bank] masks out rows a query may not use (itself, its own fold)."""
    sims = query @ bank.T
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    k = max(1, min(k, bank.shape[0]))
    top = -np.sort(-sims, axis=1)[:, :k]
    top = np.where(np.isfinite(top), top, -1.0)
    return (1.0 - top).mean(1)


def most_similar(query: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(bank row indices [n_query, k], cosine similarities [n_query, k]) of each (normalised) query
    row's k most similar (normalised) bank rows, most similar first. Brute force: one matrix product
    (timed in docs/user-guide.md#similar-cases: about 1 ms against the 4000 rows a bank keeps)."""
    k = max(0, min(k, bank.shape[0]))
    sims = np.asarray(query, dtype=np.float32) @ np.asarray(bank, dtype=np.float32).T
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if 0 < k < bank.shape[0] else np.tile(np.arange(k), (len(sims), 1))
    top = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    # float16 rows round a copy's similarity a hair past 1
    return np.take_along_axis(idx, order, axis=1), np.clip(np.take_along_axis(top, order, axis=1), -1.0, 1.0)


def oof_novelty(features: np.ndarray, folds: np.ndarray, k: int = NOVELTY_K) -> np.ndarray:
    """Each training image's novelty against the images of the other folds (never itself or a copy
    in its own fold), the same measure a new image gets against the whole bank."""
    bank = normalise(features)
    out = np.empty(len(bank), dtype=np.float64)
    for f in np.unique(folds):
        inside = folds == f
        out[inside] = knn_distance(bank[inside], bank[~inside], k)
    return out


def odd_ones_out(features: np.ndarray, labels: np.ndarray, keys: list[str], threshold: float,
                 k: int = NOVELTY_K, limit: int = 25) -> list[dict]:
    """Training images unlike the rest of their own class (leave-one-out kNN within the class),
    farthest first."""
    bank, found = normalise(features), []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 3:
            continue
        members = bank[idx]
        allowed = ~np.eye(len(idx), dtype=bool)
        dist = knn_distance(members, members, min(k, len(idx) - 1), allowed)
        found += [{"key": keys[i], "label": int(c), "distance": round(float(d), 4)}
                  for i, d in zip(idx, dist) if d > threshold]
    return sorted(found, key=lambda r: -r["distance"])[:limit]


def bank_rows(labels: np.ndarray, seed: int = 0, limit: int = MAX_BANK) -> np.ndarray:
    """Which training images the artifact keeps for the novelty check (a stratified sample)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(labels), size=limit, replace=False))


# --- likely mislabelled images --------------------------------------------------------------

def suspected_mislabels(oof: np.ndarray, labels: np.ndarray, keys: list[str], limit: int = SUSPECTS_KEPT) -> list[dict]:
    """Images ranked by the out-of-fold probability of their given label, lowest (most suspect)
    first, with the class the other folds' models preferred.

    Each probability is taken relative to its class's mean self-confidence (confident learning's
    per-class threshold, Northcutt et al. 2021): in a class the model finds hard, a low probability
    is ordinary and should not crowd out a clear flip from an easy class. With 10% of labels
    flipped, the top 25 held 18 true flips instead of 17 on knee X-rays, and the same on flowers and
    brick cracks."""
    given = oof[np.arange(len(labels)), labels]
    self_confidence = np.array([given[labels == c].mean() if (labels == c).any() else 1.0
                                for c in range(oof.shape[1])])
    order = np.argsort(given / np.maximum(self_confidence[labels], 1e-12), kind="stable")
    rows = []
    for i in order[:limit]:
        suggested = int(oof[i].argmax())
        if suggested == labels[i]:
            continue  # the other folds' models still prefer the given label: not a suspect
        rows.append({"key": keys[i], "label": int(labels[i]), "suggested": suggested,
                     "p_given": round(float(given[i]), 4), "p_suggested": round(float(oof[i, suggested]), 4)})
    return rows


# --- one call from fit() --------------------------------------------------------------------

class head_input:
    """Context manager capturing the features entering a Classifier's head (its penultimate layer)
    during a forward pass, without changing the model: `with head_input(model) as seen: ...`."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __enter__(self) -> list:
        self.handle = self.model.head.register_forward_pre_hook(lambda _m, args: self.seen.append(args[0].detach()))
        return self.seen

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def calibrate(*, dev_features, dev_labels, dev_keys, oof_features, C, n_classes, finetuned, temperature, val_probs, val_labels,
              eval_probs, eval_labels, seed=0, alpha=DEFAULT_ALPHA, dev_groups=None, set_aside=False,
              cross_fitted=None) -> tuple[dict, dict]:
    """Everything fit() reports and the artifact keeps about trust, from images that are never the
    test set: (summary for the metrics, arrays for trust.npz). A fine-tuned model comes with the
    temperature fit() rescaled it by (1.0 otherwise); val_probs and eval_probs are already rescaled."""
    if cross_fitted is not None:  # fit() already solved this cross-fit for the quick model's retrain
        oof, folds = cross_fitted.probs, cross_fitted.folds
    else:
        oof, folds = oof_probabilities(oof_features, dev_labels, n_classes, C, seed, dev_groups)
    summary = {"alpha": alpha, "suspected_mislabels": [], "odd_ones_out": [], "temperature": temperature}
    if finetuned and set_aside:  # val_probs: the final model's, on images that chose and trained nothing
        summary["calibrated_on"] = (f"{len(val_labels)} validation images set aside before fine-tuning: they chose "
                                    "nothing and were never trained on")
        scores = nonconformity(val_probs, val_labels)
    elif finetuned and len(val_labels) >= 2:  # too few validation images to set some aside
        summary["calibrated_on"] = "validation images (they also chose the epoch and stage, so this is optimistic)"
        scores = nonconformity(val_probs, val_labels)
    elif oof is not None:
        summary["calibrated_on"] = "out-of-fold probabilities of every training and validation image"
        scores = nonconformity(oof, dev_labels)
    else:
        scores = np.zeros(0)
        summary["calibrated_on"] = "nothing: too few images per class"
    if oof is not None:
        ranked_on = repeated_oof(oof, oof_features, dev_labels, n_classes=n_classes, C=C, seed=seed, groups=dev_groups)
        summary["suspected_mislabels"] = suspected_mislabels(ranked_on, dev_labels, dev_keys)
    summary.update(n_calibration=int(len(scores)), min_alpha=round(min_alpha(len(scores)), 4))
    if eval_probs is not None and len(eval_labels) and len(scores) and alpha >= min_alpha(len(scores)):
        summary["eval"] = set_quality(eval_probs, eval_labels, conformal_threshold(scores, alpha))
    summary["reliability"] = reliability(eval_probs, eval_labels) if eval_probs is not None else None
    arrays = {"scores": np.sort(scores).astype(np.float32)}
    rows = bank_rows(dev_labels, seed)
    novelty_folds = folds if folds is not None else np.arange(len(dev_labels)) % max(2, min(5, len(dev_labels)))
    if len(dev_labels) >= 4:
        distances = oof_novelty(dev_features, novelty_folds)
        threshold = float(np.quantile(distances, NOVELTY_QUANTILE))
        summary.update(novelty_threshold=round(threshold, 5), novelty_k=NOVELTY_K)
        summary["odd_ones_out"] = odd_ones_out(dev_features, dev_labels, dev_keys, threshold)
        arrays["bank"] = normalise(dev_features[rows]).astype(np.float16)
        # Which image each bank row is (the sample keys: image pks as text) and its label: the
        # similar training images beside a prediction (older artifacts lack them and show none).
        arrays["bank_keys"] = np.array([str(dev_keys[i]) for i in rows])
        arrays["bank_labels"] = np.asarray(dev_labels)[rows].astype(np.int32)
    return summary, arrays
