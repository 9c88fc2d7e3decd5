"""Which unlabelled image to ask about next ("label these next"), and when asking more stops paying.

`rank_pool` orders an Inbox from cached features alone (no Django, no images): the quick model (the
same class-balanced logistic regression on cached features a training run starts with,
head.fit_linear_head) scores every unlabelled image, and the order mixes three kinds of pick:

- **unsure**: images the quick model is unsure about (small margin between its two most likely
  classes), thinned out in feature space so a batch is not ten near-identical pictures:
  CANDIDATES_PER_PICK x batch candidates are drawn with a chance proportional to their unsureness
  (1 - margin; stochastic batch acquisition, Kirsch et al. 2023: taking only the very least sure
  piles every pick into the overlap of two classes, where labels teach least), clustered (k-means)
  into one cluster per pick, and each cluster gives its least sure member (margin sampling with a
  diversity step, as in Citovsky et al. 2021, "Batch active learning at scale");
- **unlike anything labelled yet** (cold start): while there are fewer than COLD_START_PER_CLASS
  labels a class, the quick model's margins mean little, so the picks cover the feature space
  instead: the pool is clustered into (labelled + batch) clusters and every cluster that holds no
  labelled image gives its most typical member, the clusters that are large and far from every
  label first (TypiClust, Hacohen et al. 2022: with a handful of labels, typical images beat
  uncertain or outlying ones);
- **random**: a fixed share of picks drawn uniformly from the whole Inbox, so the labels also
  form an unbiased sample of it; the quick model's suggestions on those picks, compared with the
  labels given, are an honest estimate of its accuracy (`honest_estimate`).

`has_plateaued` says when labelling more is unlikely to help: the predictions on the Inbox and the
estimate have stopped changing over the last retrains ("stabilizing predictions", Bloodgood and
Vijay-Shanker 2009).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .head import fit_linear_head

UNSURE, NOVEL, RANDOM = "unsure", "novel", "random"
REASON_NOVEL = "unlike anything labelled yet"
REASON_RANDOM = "random pick (keeps the estimate honest)"
# Share of picks drawn at random from the whole Inbox: 1 in 10 keeps an unbiased sample growing
# while costing little of the ordering's gain.
RANDOM_SHARE = 0.1
# Below this many labels a class (on average), coverage picks replace uncertainty picks.
COLD_START_PER_CLASS = 5
# The least sure images considered for one pick; they are clustered into one group a pick.
CANDIDATES_PER_PICK = 5
# Cosine distance (of centred, normalised features) under which two images count as near-identical:
# a batch never holds both.
NEAR_DUPLICATE = 0.02
# Information density (Settles and Craven 2008): uncertainty times density ** DENSITY_POWER, so
# outliers the model is unsure about rank below unsure images typical of many others.
DENSITY_POWER = 0.0
DENSITY_K = 10
# 0: the least sure candidates; > 0: candidates drawn at random with chance ~ unsureness ** power
# (stochastic batch acquisition, Kirsch et al. 2023), so the overlap of two classes does not take
# every pick.
SAMPLING_POWER = 1.0
# Neighbours that measure an image's typicality (inverse mean distance to them) in its cluster.
TYPICALITY_K = 20


@dataclass
class Pick:
    index: int  # row of x_pool
    kind: str  # UNSURE, NOVEL or RANDOM
    reason: str
    suggestion: int | None  # the quick model's class for it (None: no model yet)
    probability: float | None


@dataclass
class Ranking:
    picks: list[Pick]
    probs: np.ndarray | None  # [n_pool, n_classes]: the quick model's probabilities (None: no model yet)
    cold_start: bool

    @property
    def order(self) -> list[int]:
        return [p.index for p in self.picks]


def quick_probs(x_labelled: np.ndarray, y_labelled: np.ndarray, x_pool: np.ndarray, n_classes: int,
                C: float | None = None) -> np.ndarray | None:
    """The quick model trained on the labelled features, its probabilities on the pool; None while
    fewer than two classes have a label (no model can be trained)."""
    if len(np.unique(y_labelled)) < 2:
        return None
    head, _ = fit_linear_head(np.asarray(x_labelled), np.asarray(y_labelled), n_classes, C=C)
    with torch.no_grad():
        return torch.softmax(head(torch.as_tensor(np.asarray(x_pool), dtype=torch.float32)), -1).numpy()


def rank_pool(x_labelled: np.ndarray, y_labelled: np.ndarray, x_pool: np.ndarray, n_classes: int, *,
              n: int | None = 10, batch: int = 10, classes: list[str] | None = None,
              random_share: float = RANDOM_SHARE, probs: np.ndarray | None = None, C: float | None = None,
              seed: int = 0) -> Ranking:
    """The first `n` Inbox images to ask about (None: the whole Inbox), in order, with why each.

    `probs` ([n_pool, n_classes]) skips the quick model's fit when the caller has just trained it.
    Picks come batch by batch (`batch` at a time, what the labeller does between retrains): within
    a batch no two picks are near-identical; images picked in an earlier batch count as labelled
    for the next one's coverage and diversity (the model is not retrained in between). Pick j
    (0-based) is random exactly when floor((j + 1) * random_share) > floor(j * random_share), so
    every prefix of the order holds its share of random picks. Deterministic for a given seed."""
    x_pool = np.asarray(x_pool, dtype=np.float32)
    x_labelled = np.asarray(x_labelled, dtype=np.float32).reshape(-1, x_pool.shape[1])
    y_labelled = np.asarray(y_labelled, dtype=np.int64)
    names = list(classes) if classes else [f"class {c}" for c in range(n_classes)]
    total = len(x_pool) if n is None else min(n, len(x_pool))
    if probs is None:
        probs = quick_probs(x_labelled, y_labelled, x_pool, n_classes, C)
    z_all = _embed(np.concatenate([x_labelled, x_pool]))
    z_lab, z_pool = z_all[: len(x_labelled)], z_all[len(x_labelled):]
    rng = np.random.default_rng(seed)
    margin = _margins(probs) if probs is not None else None
    available = np.ones(len(x_pool), dtype=bool)
    picked_z = [z_lab]
    picks: list[Pick] = []
    cold = _cold(len(y_labelled), n_classes, probs)
    density = _density(z_pool) if DENSITY_POWER else None
    while len(picks) < total:
        size = min(batch, total - len(picks))
        slots = [_is_random_slot(len(picks) + j, random_share) for j in range(size)]
        n_chosen = slots.count(False)
        known = np.concatenate(picked_z)
        if _cold(len(known), n_classes, probs):
            chosen, kind = _typical_uncovered(z_pool, available, known, n_chosen, rng), NOVEL
        else:
            chosen, kind = _unsure_diverse(z_pool, margin, available, n_chosen, rng, density), UNSURE
        available[chosen] = False
        random_ones = list(rng.choice(np.flatnonzero(available), size=min(slots.count(True), int(available.sum())),
                                      replace=False)) if any(slots) else []
        available[random_ones] = False
        chosen_iter, random_iter = iter(chosen), iter(random_ones)
        for is_random in slots:
            index = next(random_iter, None) if is_random else next(chosen_iter, None)
            if index is None:  # the Inbox ran out of one kind: fill from the other
                index = next(chosen_iter, None) if is_random else next(random_iter, None)
                is_random = not is_random
            if index is None:
                break
            picks.append(_pick(int(index), RANDOM if is_random else kind, probs, margin, names))
        picked_z.append(z_pool[[p.index for p in picks[-size:]]])
    return Ranking(picks[:total], probs, cold)


# --- "labelling more is unlikely to help" -------------------------------------------------------

@dataclass
class Snapshot:
    """One retrain of the quick model: how many labels it had, its estimated accuracy (with the
    interval, when known) and its predicted class for each Inbox image (image key -> class)."""

    labels: int
    estimate: float
    predictions: dict
    low: float | None = None
    high: float | None = None


@dataclass
class Plateau:
    stopped: bool
    message: str
    agreements: list[float] = field(default_factory=list)  # kappa between consecutive retrains in the window
    estimate_change: float | None = None


def has_plateaued(history: list[Snapshot], *, window: int = 3, min_kappa: float = 0.99,
                  min_labels: int = 20, estimate_tolerance: float = 0.02) -> Plateau:
    """Labelling more is unlikely to help when, over the last `window` retrains (as many more as it
    takes to span at least `min_labels` labels):

    - every two consecutive retrains predict the same classes on the Inbox images they share, up to
      Cohen's kappa >= min_kappa (chance-corrected agreement; Bloodgood and Vijay-Shanker 2009
      stop at 0.99 over three windows), and
    - every estimate in the window lies within the latest one's interval, or within
      `estimate_tolerance` of it when no interval is known.

    Cost: one pass over each retrain's predictions; nothing is trained."""
    if len(history) < window + 1:
        return Plateau(False, f"not enough retrains yet ({len(history)} of {window + 1})")
    start = len(history) - window - 1
    while start > 0 and history[-1].labels - history[start].labels < min_labels:
        start -= 1
    span = history[start:]
    if span[-1].labels - span[0].labels < min_labels:
        return Plateau(False, f"the last retrains span {span[-1].labels - span[0].labels} labels, fewer than {min_labels}")
    kappas = [_kappa(a.predictions, b.predictions) for a, b in itertools.pairwise(span)]
    last = span[-1]
    low = last.low if last.low is not None else last.estimate - estimate_tolerance
    high = last.high if last.high is not None else last.estimate + estimate_tolerance
    change = max(abs(s.estimate - last.estimate) for s in span)
    steady_estimate = all(low - 1e-9 <= s.estimate <= high + 1e-9 for s in span)
    if min(kappas) < min_kappa:
        return Plateau(False, f"predictions on the Inbox still change (agreement {min(kappas):.3f})", kappas, change)
    if not steady_estimate:
        return Plateau(False, f"the estimated accuracy still moves ({change:.3f} over the last retrains)", kappas, change)
    return Plateau(True, f"the predictions on the Inbox and the estimated accuracy have not changed over the last "
                         f"{span[-1].labels - span[0].labels} labels: labelling more is unlikely to help", kappas, change)


def honest_estimate(suggested, given, z: float = 1.96) -> tuple[float, float, float] | None:
    """Accuracy of the quick model's suggestions on the random picks (each suggestion made before its
    label was given), with a Wilson interval: (estimate, low, high); None without any."""
    suggested, given = np.asarray(suggested), np.asarray(given)
    n = len(given)
    if n == 0:
        return None
    p = float(np.mean(suggested == given))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


# --- the pieces ---------------------------------------------------------------------------------

def _is_random_slot(j: int, share: float) -> bool:
    return math.floor((j + 1) * share + 1e-9) > math.floor(j * share + 1e-9)


def _cold(n_labelled: int, n_classes: int, probs) -> bool:
    return probs is None or n_labelled < COLD_START_PER_CLASS * n_classes


def _embed(x: np.ndarray) -> np.ndarray:
    """Centred, unit-length features: cosine geometry without the offset all backbone features share."""
    x = x - x.mean(0, keepdims=True)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def _margins(probs: np.ndarray) -> np.ndarray:
    top2 = -np.sort(-probs, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def _pick(index: int, kind: str, probs, margin, names) -> Pick:
    if probs is None:
        return Pick(index, kind, REASON_RANDOM if kind == RANDOM else REASON_NOVEL, None, None)
    order = np.argsort(-probs[index], kind="stable")
    reason = {RANDOM: REASON_RANDOM, NOVEL: REASON_NOVEL}.get(kind) or (
        f"unsure between {names[order[0]]} and {names[order[1]]}")
    return Pick(index, kind, reason, int(order[0]), float(probs[index, order[0]]))


def _unsure_diverse(z: np.ndarray, margin: np.ndarray, available: np.ndarray, k: int, rng,
                    density: np.ndarray | None = None) -> list[int]:
    """k of the least sure available images, one a cluster of the CANDIDATES_PER_PICK * k least sure,
    least sure first, no two near-identical."""
    if k <= 0:
        return []
    free = np.flatnonzero(available)
    unsure = np.clip(1.0 - margin[free], 1e-12, None)
    if density is not None:
        unsure = unsure * density[free] ** DENSITY_POWER
    if SAMPLING_POWER:  # candidates drawn with chance ~ unsure ** power (Gumbel top-k), not the top ones
        unsure = np.exp(SAMPLING_POWER * np.log(unsure) + rng.gumbel(size=len(free)))
    candidates = free[np.argsort(-unsure, kind="stable")[: CANDIDATES_PER_PICK * k]]
    assign = kmeans(z[candidates], min(k, len(candidates)), rng)
    heads = [candidates[assign == c][np.argmin(margin[candidates[assign == c]])] for c in np.unique(assign)]
    rest = [i for i in candidates if i not in set(heads)]  # spares, should a head be a near-duplicate
    return _without_near_duplicates(sorted(heads, key=lambda i: margin[i]) + rest, z, k)


def _typical_uncovered(z: np.ndarray, available: np.ndarray, known: np.ndarray, k: int, rng) -> list[int]:
    """k available images covering the feature space: the pool clustered into len(known) + k
    clusters; every cluster without a known (labelled or already picked) image gives its most
    typical member, the largest and farthest from the known first; then the images farthest from
    everything known."""
    if k <= 0:
        return []
    free = np.flatnonzero(available)
    if len(free) == 0:
        return []
    assign = kmeans(z[free], min(len(free), len(known) + k), rng)
    n_clusters = int(assign.max()) + 1
    centres = np.stack([z[free][assign == c].mean(0) for c in range(n_clusters)])
    covered = set(np.argmax(known @ centres.T, axis=1).tolist()) if len(known) else set()
    # Largest and farthest from what is known first: a cluster's size times its members' mean
    # distance to the nearest known image (what labelling its typical member would cover).
    far = 1.0 - (known @ z[free].T).max(0) if len(known) else np.ones(len(free))
    gain = np.bincount(assign, weights=far, minlength=n_clusters)
    order = [c for c in np.argsort(-gain, kind="stable") if c not in covered and gain[c] > 0]
    chosen = []
    for c in order:
        members = free[assign == c]
        chosen.append(int(members[np.argmax(_typicality(z[members]))]))
    # Farthest-first (k-center greedy) fills what the uncovered clusters could not.
    bank = np.concatenate([known, z[chosen]]) if len(chosen) else known
    nearest = (bank @ z[free].T).max(0) if len(bank) else np.full(len(free), -np.inf)
    extra = []
    for i in np.argsort(nearest, kind="stable"):
        if free[i] not in chosen:
            extra.append(int(free[i]))
        if len(extra) >= k:
            break
    return _without_near_duplicates(chosen + extra, z, k)


def _density(z: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Each image's mean cosine similarity to its DENSITY_K nearest pool neighbours, scaled to (0, 1]."""
    k = min(DENSITY_K, len(z) - 1)
    if k < 1:
        return np.ones(len(z))
    out = np.empty(len(z))
    for start in range(0, len(z), chunk):
        sims = z[start:start + chunk] @ z.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        out[start:start + chunk] = np.sort(sims, axis=1)[:, -k:].mean(1)
    out = np.clip(out, 1e-6, None)
    return out / out.max()


def _typicality(z: np.ndarray) -> np.ndarray:
    if len(z) == 1:
        return np.ones(1)
    dist = np.maximum(1.0 - z @ z.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    k = min(TYPICALITY_K, len(z) - 1)
    return 1.0 / (np.sort(dist, axis=1)[:, :k].mean(1) + 1e-8)


def _without_near_duplicates(ranked, z: np.ndarray, k: int) -> list[int]:
    """The first k of `ranked` that are not near-identical to one kept before them."""
    kept: list[int] = []
    for i in ranked:
        if len(kept) == k:
            break
        if not kept or (1.0 - z[kept] @ z[i]).min() > NEAR_DUPLICATE:
            kept.append(int(i))
    return kept


def kmeans(z: np.ndarray, k: int, rng, iterations: int = 20) -> np.ndarray:
    """Plain k-means (k-means++ start, Lloyd steps) on rows of z; a cluster index per row."""
    n = len(z)
    k = max(1, min(k, n))
    sq = (z * z).sum(1)
    centres = [z[rng.integers(n)]]
    d2 = np.maximum(sq - 2 * z @ centres[0] + centres[0] @ centres[0], 0)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(z[i])
        d2 = np.minimum(d2, np.maximum(sq - 2 * z @ z[i] + z[i] @ z[i], 0))
    c = np.stack(centres)
    assign = np.full(n, -1)
    for _ in range(iterations):
        new = np.argmin((c * c).sum(1)[None, :] - 2 * z @ c.T, axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = z[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return _compact(assign)


def _compact(assign: np.ndarray) -> np.ndarray:
    """Cluster numbers 0..m-1 with no empty one."""
    return np.unique(assign, return_inverse=True)[1]


def _kappa(a: dict, b: dict) -> float:
    """Cohen's kappa between two retrains' predictions on the images both scored (1.0 when they
    agree on every one, chance agreement or not)."""
    keys = [key for key in a if key in b]
    if not keys:
        return 0.0
    pa = np.array([a[key] for key in keys])
    pb = np.array([b[key] for key in keys])
    observed = float(np.mean(pa == pb))
    if observed == 1.0:
        return 1.0
    labels = np.union1d(pa, pb)
    expected = float(sum(np.mean(pa == c) * np.mean(pb == c) for c in labels))
    return (observed - expected) / (1 - expected) if expected < 1 else 0.0
