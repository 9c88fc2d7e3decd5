"""Drift (#25): are this week's images still like the images the model was trained on?

Two figures, both on the model's own features (the normalised head input that the novelty check
uses, logged with every prediction, and the training images' in the artifact's novelty bank):

- **unlike_share**, the effect: the share of this week's predictions whose novelty score is above
  the model's threshold ("unlike anything it was trained on"). The threshold is the 98th
  percentile of the training images' own out-of-fold scores (engine.calibrate.NOVELTY_QUANTILE), so
  about 2% of images like the training ones cross it by chance: EXPECTED_SHARE.
- **p_value**, the evidence: a two-sample test between this week's features and the training
  images'. We use the kernel maximum mean discrepancy (MMD, Gretton et al. 2012) with a Gaussian
  kernel (bandwidth by the median heuristic) and a permutation p-value. Why this one: the
  permutation p-value is exact for any sample size (no asymptotic approximation that misleads at
  n = 30), it needs no model fitted and no held-out half (a classifier two-sample test spends half
  the sample to train its classifier and depends on that classifier's settings), and its cost is
  bounded: at most MAX_RECENT + MAX_TRAINING rows, so one kernel matrix of at most 600 x 600 and
  PERMUTATIONS matrix products on it, a few tens of milliseconds. Both samples are drawn at random
  (fixed seed, so a reload gives the same answer) when larger.

A test alone is not enough: with hundreds of images MMD also finds shifts that do no harm (a week
when one class was photographed more often; a fine-tuned model whose training images sit tighter
than new ones). So drift is **detected** only when the test says so (p < DRIFT_P) *and* the effect
is large (unlike_share >= MIN_UNLIKE_SHARE, several times EXPECTED_SHARE), on at least
MIN_PREDICTIONS predictions. The features of different versions live in different spaces: the test
uses the predictions of the version that answered most of this week's, against that version's bank.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import timedelta

import numpy as np
from django.utils import timezone

from transferapp.engine import calibrate
from transferapp.models import Prediction, Project, TrainingRun
from transferapp.storage import blobs

logger = logging.getLogger(__name__)

WINDOW_DAYS = 7  # "this week"
MAX_RECENT = 300  # this week's predictions in the test, at most (a random sample beyond)
MAX_TRAINING = 300  # training images' features in the test, at most
PERMUTATIONS = 500  # the smallest p-value is then 1/501, well under DRIFT_P
DRIFT_P = 0.01
EXPECTED_SHARE = round(1 - calibrate.NOVELTY_QUANTILE, 4)  # images like the training ones that cross the threshold
MIN_UNLIKE_SHARE = 0.15
MIN_PREDICTIONS = 20


# --- the test ---------------------------------------------------------------------------------

def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """(MMD², permutation p-value) between samples x [m, d] and y [n, d]. The kernel is Gaussian on
    squared Euclidean distances, its bandwidth the median distance of the pooled sample; the
    statistic is a'Ka with a = 1/m on x's rows and -1/n on y's (the biased estimate, which the
    permutation test makes exact); p = (1 + #permuted >= observed) / (1 + permutations)."""
    z = np.vstack([x, y]).astype(np.float64)
    m, n = len(x), len(y)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off = d2[~np.eye(len(z), dtype=bool)]
    bandwidth = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0
    kernel = np.exp(-d2 / bandwidth)
    a = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    observed = float(a @ kernel @ a)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([a[rng.permutation(m + n)] for _ in range(permutations)], axis=1)  # [m+n, B]
    stats = np.einsum("ib,ib->b", shuffled, kernel @ shuffled)
    p_value = (1 + int(np.sum(stats >= observed - 1e-12))) / (1 + permutations)
    return observed, p_value


# --- this week against the training images ----------------------------------------------------

def training_features(run: TrainingRun) -> tuple[np.ndarray, float | None] | None:
    """(the artifact's novelty bank [n, d], its novelty threshold), or None for a model without one."""
    folder = blobs.artifact_folder(run)
    if folder is None or not (folder / "trust.npz").exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "trust.npz") as arrays:
            bank = np.asarray(arrays["bank"], dtype=np.float32) if "bank" in arrays else None
    except (OSError, ValueError, KeyError):
        return None
    if bank is None or not len(bank):
        return None
    return bank, (meta.get("trust") or {}).get("novelty_threshold")


def novelty_threshold(run: TrainingRun) -> float | None:
    """The version's novelty threshold (from its meta.json), or None for a model without one."""
    folder = blobs.artifact_folder(run)
    try:
        meta = json.loads((folder / "meta.json").read_text()) if folder is not None else {}
    except (OSError, ValueError):
        return None
    return (meta.get("trust") or {}).get("novelty_threshold")


def _sample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))]


def drift_report(project: Project, now=None) -> dict:
    """This week's drift: {"p_value", "unlike_share", "sentence", "detected", "n", "version",
    "expected_share", "window_days"}; p_value and unlike_share are None where they cannot be computed."""
    now = now or timezone.now()
    week = Prediction.objects.filter(project=project, created_at__gt=now - timedelta(days=WINDOW_DAYS),
                                     created_at__lte=now)
    n = week.count()
    scored = list(week.exclude(novelty=None).values_list("unfamiliar", flat=True))
    unlike_share = round(sum(scored) / len(scored), 4) if scored else None
    report = {"n": n, "unlike_share": unlike_share, "p_value": None, "statistic": None, "version": None,
              "expected_share": EXPECTED_SHARE, "window_days": WINDOW_DAYS, "detected": False}
    versions = Counter(week.exclude(features=None).exclude(run=None).values_list("run", flat=True))
    if versions:
        run_pk = max(versions, key=lambda pk: (versions[pk], pk))
        report.update(_test(project, run_pk, week))
    report["detected"] = bool(n >= MIN_PREDICTIONS and report["p_value"] is not None and report["p_value"] < DRIFT_P
                              and unlike_share is not None and unlike_share >= MIN_UNLIKE_SHARE)
    report["sentence"] = drift_sentence(report)
    return report


def _test(project: Project, run_pk: int, week) -> dict:
    run = TrainingRun.objects.filter(pk=run_pk, project=project).first()
    training = training_features(run) if run is not None else None
    if training is None:
        return {}
    bank = training[0]
    # Only the sampled rows' features are read: a busy week's are thousands of rows of a few KB.
    pks = np.array(sorted(week.filter(run_id=run_pk).exclude(features=None).values_list("pk", flat=True)))
    chosen = [int(pk) for pk in _sample(pks, MAX_RECENT, seed=1)]
    rows = [np.frombuffer(bytes(b), dtype=np.float16) for b in
            Prediction.objects.filter(pk__in=chosen).values_list("features", flat=True)]
    recent = np.array([row for row in rows if row.shape[0] == bank.shape[1]], dtype=np.float32)
    if len(recent) < 2 or len(bank) < 2:
        return {"version": run.version}
    x = calibrate.normalise(recent)
    y = calibrate.normalise(_sample(bank, MAX_TRAINING, seed=2))
    statistic, p_value = mmd_test(x, y)
    return {"version": run.version, "statistic": round(statistic, 6), "p_value": round(p_value, 4),
            "n_tested": len(x), "n_training": len(y)}


def drift_sentence(report: dict) -> str:
    n, share, p = report["n"], report["unlike_share"], report["p_value"]
    if n == 0:
        return "Nothing was predicted this week, so there is nothing to compare with the training images."
    percent = f"{share * 100:.0f}%" if share is not None else None
    if n < MIN_PREDICTIONS:
        return (f"Only {n} image{'s were' if n != 1 else ' was'} predicted this week: too few to tell whether they "
                f"differ from the training images.")
    if share is None:
        return "This model keeps no features of its training images, so this week's images cannot be compared with them."
    if report["detected"]:
        return f"{percent} of this week's images are unlike anything the model was trained on."
    if share >= MIN_UNLIKE_SHARE:
        return (f"{percent} of this week's images are unlike anything the model was trained on, though the week "
                f"as a whole is not clearly different from the training images yet.")
    if p is not None and p < DRIFT_P:
        return (f"This week's images are close to the training images ({percent} unlike any of them), but their "
                f"mix differs from the training images' (p = {p:.3f}): some kinds came more often than in training.")
    return f"This week's images look like the training images ({percent} unlike any of them)."
