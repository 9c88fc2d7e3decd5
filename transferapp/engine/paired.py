"""Is one model better than another on the same images, or is the difference noise?

Two models scored on the same validation images mostly get the same images right. Only the images
where they disagree (one right, the other wrong) say anything about which is better, and on 50-150
validation images there are often a handful: a one-image lead is noise. The comparison here is
McNemar's, exact: given how many images the two disagree on, the share that goes to each side gets
a Clopper-Pearson interval, turned back into an interval of the accuracy difference. A difference is
"clear" when that interval excludes 0 (at 95 %: 6 to 0 is clear, 5 to 0 is not).
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, level: float = LEVEL) -> dict:
    """Accuracy of a minus b on the images both scored, its interval, and whether it is clear.
    correct_*: one bool per image, in the same order."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    disagree = a_only + b_only
    if n == 0:
        return {"n": 0, "a_only": 0, "b_only": 0, "difference": 0.0, "low": 0.0, "high": 0.0, "clear": False}
    p_low, p_high = clopper_pearson(a_only, disagree, level)
    low, high = disagree / n * (2 * p_low - 1), disagree / n * (2 * p_high - 1)
    return {"n": n, "a_only": a_only, "b_only": b_only, "difference": round((a_only - b_only) / n, 4),
            "low": round(low, 4), "high": round(high, 4), "clear": low > 0 or high < 0}


def clopper_pearson(k: int, m: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact interval for a binomial share k/m ((0, 1) when m is 0)."""
    if m == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else _solve(lambda p: _upper_tail(k, m, p) - tail)
    high = 1.0 if k == m else _solve(lambda p: tail - _lower_tail(k, m, p))
    return low, high


def _lower_tail(k: int, m: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(m, p)."""
    return sum(_pmf(i, m, p) for i in range(k + 1))


def _upper_tail(k: int, m: int, p: float) -> float:
    """P(X >= k)."""
    return sum(_pmf(i, m, p) for i in range(k, m + 1))


def _pmf(i: int, m: int, p: float) -> float:
    if p <= 0:
        return float(i == 0)
    if p >= 1:
        return float(i == m)
    log = math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) + i * math.log(p) + (m - i) * math.log1p(-p)
    return math.exp(log)


def _solve(f, lo: float = 0.0, hi: float = 1.0) -> float:
    """The root of an increasing f on [lo, hi], by bisection (60 halvings: far below any rounding shown)."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def in_words(name_a: str, name_b: str, d: dict) -> str:
    """"of the 66 images, the average of the two was right on 5 that the quick model got wrong, and the
    quick model on 2 that it got wrong: a difference of +4.5 points, 95% interval -4.5 to +9.8"."""
    if d["a_only"] + d["b_only"] == 0:
        return f"{name_a} and {name_b} were right on the same {d['n']} images"
    return (f"of the {d['n']} images, {name_a} was right on {d['a_only']} that {name_b} got wrong, and {name_b} on "
            f"{d['b_only']} that it got wrong: a difference of {_points(d['difference'])} points, "
            f"{LEVEL:.0%} interval {_points(d['low'])} to {_points(d['high'])}")


def _points(share: float) -> str:
    return f"{100 * share + 0.0:+.1f}".replace("-0.0", "+0.0")
