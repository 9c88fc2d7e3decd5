"""Stage 1: a class-balanced, L2-regularised logistic regression on cached backbone features.

Seconds on a CPU, and the first usable model of every run; the learning curve reuses the solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sampling import stratified_folds

# float32, not float64: on flowers and brick_crack the heads agree on every validation image (logits
# within 0.003) and a retrain's stage 1 takes half the time (the largest part of a retrain).
DTYPE = torch.float32

# Regularisation grid (sklearn's C: larger = weaker L2 penalty), chosen by internal CV.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# C when a class has too few images to choose it by CV. In the middle of the grid: on 5, 10 and 20
# images a class of three unlike sets (photos, brickwork, knee X-rays; 5 draws each) every C from
# 0.01 to 1 scored within 1.5 points of CV's choice, except knee X-rays at 20 a class, where CV's
# strong regularisation (C 0.003) beat 0.1 by 2 points (bench/small_data_bench.py).
FIXED_C = 0.1
# Share of each feature's variance taken from its own sample variance; the rest is the mean variance
# over all features (shrinkage towards one common scale). A variance estimated from 10 images is off
# by +-45 %, and plain per-feature standardisation turns a dimension that happened to vary little in
# those images into a huge input: on 5-20 images a class it scored 2-4 points below a plain
# logistic regression on the raw features, on all three sets. Half and half lost nothing with every
# image of the sets (flowers 0.890-0.895, brick 0.986, knee 0.521-0.529) and beat the raw features
# by up to 4 points with few.
OWN_VARIANCE_SHARE = 0.5


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights n / (k * n_c), so every class counts equally in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


@dataclass
class LogregProblem:
    """Training features centred and scaled (so one C grid fits every backbone and LBFGS converges
    fast; see OWN_VARIANCE_SHARE for the scale), labels as a tensor, and class-balanced per-sample
    weights."""

    Xs: torch.Tensor
    Y: torch.Tensor
    w: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_features(cls, x: np.ndarray, y: np.ndarray, n_classes: int) -> "LogregProblem":
        X = torch.as_tensor(x, dtype=DTYPE)
        mean, var = X.mean(0), X.var(0, unbiased=False)
        std = (OWN_VARIANCE_SHARE * var + (1 - OWN_VARIANCE_SHARE) * var.mean()).sqrt().clamp_min(1e-6)
        Y = torch.as_tensor(y)
        w = torch.as_tensor(class_weights(y, n_classes), dtype=DTYPE)[Y]
        return cls((X - mean) / std, Y, w, mean, std)

    def standardise(self, x: np.ndarray) -> torch.Tensor:
        return (torch.as_tensor(x, dtype=DTYPE) - self.mean) / self.std


def fit_linear_head(x: np.ndarray, y: np.ndarray, n_classes: int, C: float | None = None,
                    groups=None) -> tuple[nn.Linear, dict]:
    """Pick C by stratified internal CV on the training features (the validation set stays
    untouched for choosing between stages) unless given, fit on all of them, return a float32 nn.Linear."""
    problem = LogregProblem.from_features(x, y, n_classes)
    Xs, Y, w = problem.Xs, problem.Y, problem.w
    C = _choose_c(Xs, Y, w, n_classes, groups) if C is None else C
    W, b = solve_logreg(Xs, Y, w, torch.ones(1, len(Y), dtype=DTYPE), torch.tensor([C], dtype=DTYPE), n_classes,
                         max_iter=150)
    return _as_linear(W[0], b[0], problem), {"C": C}


@dataclass
class CrossFit:
    """K logistic regressions, each fitted with one fold left out (groups kept whole)."""

    probs: np.ndarray  # [n, k]: each image scored by the model that did not see it
    folds: np.ndarray  # [n]: the fold each image was left out of
    head: nn.Linear  # the K models' average (weights and bias), for raw features


def cross_fit(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, seed: int = 0, groups=None) -> CrossFit | None:
    """All folds solved in one batched LBFGS. None with fewer than 2 images (groups) a class.

    The averaged head is what a quick model serves after the retrain on all images: its scores come
    from the same K models whose out-of-fold scores calibrate the prediction sets, so the sets'
    coverage holds on new images. A single fit on all images is sharper than the fold models
    (knee X-rays, alpha 0.1: coverage 0.85 on 240 unseen images against 0.89 for the average, and
    no less accurate)."""
    folds = stratified_folds(y, seed=seed, groups=groups)
    if folds is None or len(np.unique(y)) < n_classes:
        return None
    problem = LogregProblem.from_features(x, y, n_classes)
    k = int(folds.max()) + 1
    masks = torch.stack([torch.as_tensor(folds != f, dtype=DTYPE) for f in range(k)])
    W, b = solve_logreg(problem.Xs, problem.Y, problem.w, masks, torch.full((k,), C, dtype=DTYPE), n_classes,
                        max_iter=150)
    logits = torch.einsum("nd,pdk->pnk", problem.Xs, W) + b[:, None]  # [fold model, image, class]
    probs = torch.softmax(logits[torch.as_tensor(folds), torch.arange(len(y))], -1)
    head = _as_linear(W.mean(0), b.mean(0), problem)
    return CrossFit(probs.numpy().astype(np.float64), folds, head)


def _as_linear(W: torch.Tensor, b: torch.Tensor, problem: LogregProblem) -> nn.Linear:
    """Fold the standardisation into the layer: head(raw features) == logits."""
    head = nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        head.weight.copy_((W / problem.std[:, None]).T.float())
        head.bias.copy_((b - (problem.mean / problem.std) @ W).float())
    return head


def _choose_c(Xs, Y, w, n_classes, groups=None) -> float:
    folds = stratified_folds(Y.numpy(), seed=0, groups=groups)
    if folds is None:
        return FIXED_C  # too few images per class for CV
    grid = torch.tensor(C_GRID, dtype=DTYPE)
    # One batched LBFGS solves every (fold, C) problem at once: they are independent, so summing
    # their losses keeps each optimum while paying Python overhead once.
    masks = torch.stack([torch.as_tensor(folds != k, dtype=DTYPE) for k in range(folds.max() + 1)
                         for _ in C_GRID])
    Cs = grid.repeat(folds.max() + 1)
    W, b = solve_logreg(Xs, Y, w, masks, Cs, n_classes)
    logp = torch.log_softmax(torch.einsum("nd,pdk->pnk", Xs, W) + b[:, None], -1)
    nll = -logp[:, torch.arange(len(Y)), Y] * w  # held-out, class-balanced log loss
    held = 1 - masks
    scores = ((nll * held).sum(1) / (w * held).sum(1)).view(-1, len(C_GRID)).mean(0)
    return C_GRID[int(scores.argmin())]  # the grid's own value, not its float32 rounding


def solve_logreg(Xs, Y, w, masks, Cs, n_classes, max_iter: int = 60):
    """Minimise, per problem p: sum_i m_pi w_i CE_i / sum_i m_pi w_i + ||W_p||^2 / (2 C_p n_p)."""
    P, D = masks.shape[0], Xs.shape[1]
    W = torch.zeros(P, D, n_classes, dtype=Xs.dtype, requires_grad=True)
    b = torch.zeros(P, n_classes, dtype=Xs.dtype, requires_grad=True)
    sw = masks * w  # [P, n]
    n_p = masks.sum(1)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    onehot = F.one_hot(Y, n_classes).to(Xs.dtype)

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(torch.einsum("nd,pdk->pnk", Xs, W) + b[:, None], -1)
        ce = -(logp * onehot).sum(-1)  # [P, n]
        loss = ((ce * sw).sum(1) / sw.sum(1) + (W ** 2).sum((1, 2)) / (2 * Cs * n_p)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()
