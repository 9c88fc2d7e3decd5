""""Label these next" (engine/active.py) on tiny synthetic features, and the bench's arithmetic."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from transferapp.engine import active
from transferapp.engine.active import (
    NOVEL,
    RANDOM,
    REASON_NOVEL,
    REASON_RANDOM,
    UNSURE,
    Snapshot,
    has_plateaued,
)

CLASSES = ["cat", "dog"]


def blobs(centres, per_blob, spread, seed):
    """Gaussian blobs around the given centres: (features, blob index)."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float32)
    x = np.concatenate([c + spread * rng.standard_normal((per_blob, centres.shape[1])) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(len(centres)), per_blob)


def two_classes(seed=0, dim=8):
    """Labelled: 8 images a class, well past the cold start. Pool: 150 sure cats, 150 sure dogs and 20
    images halfway between (rows 300..319)."""
    cat, dog = np.zeros(dim), np.zeros(dim)
    cat[0], dog[0] = -3.0, 3.0
    x_lab, blob = blobs([cat, dog], 8, 0.7, seed)
    x_sure, _ = blobs([cat, dog], 150, 0.7, seed + 1)
    halfway, _ = blobs([np.zeros(dim)], 20, 0.7, seed + 2)
    return x_lab, blob, np.concatenate([x_sure, halfway])


def test_unsure_picks_come_first_and_say_between_which_classes():
    x_lab, y_lab, x_pool = two_classes()
    ranking = active.rank_pool(x_lab, y_lab, x_pool, 2, n=10, classes=CLASSES, seed=0)
    assert not ranking.cold_start
    unsure = [p for p in ranking.picks if p.kind == UNSURE]
    assert len(unsure) == 9 and ranking.picks[0].kind == UNSURE
    margins = active._margins(ranking.probs)
    # Candidates are drawn with a chance that grows with unsureness, so the halfway images (6 % of
    # the pool) dominate, the least sure first; a random pick would hit them 1 time in 16.
    assert unsure[0].index >= 300 and margins[unsure[0].index] <= np.quantile(margins, 0.05)
    assert sum(p.index >= 300 for p in unsure) >= 5
    assert np.mean([margins[p.index] for p in unsure]) < 0.5 * margins.mean()
    for p in unsure:
        assert p.reason in ("unsure between cat and dog", "unsure between dog and cat")
        assert p.suggestion == int(np.argmax(ranking.probs[p.index]))
        assert p.probability == pytest.approx(float(ranking.probs[p.index].max()))
        assert 0.5 <= p.probability <= 1.0


def test_without_sampling_the_candidates_are_the_least_sure(monkeypatch):
    monkeypatch.setattr(active, "SAMPLING_POWER", 0.0)
    x_lab, y_lab, x_pool = two_classes()
    ranking = active.rank_pool(x_lab, y_lab, x_pool, 2, n=10, seed=0)
    margins = active._margins(ranking.probs)
    unsure = [p.index for p in ranking.picks if p.kind == UNSURE]
    assert unsure[0] == int(np.argmin(margins))
    assert max(margins[unsure]) <= np.quantile(margins, 45 / 320)  # among the 5 a pick least sure


def test_a_batch_holds_no_near_duplicates_where_plain_margin_would():
    x_lab, y_lab, x_pool = two_classes(dim=8)
    least_sure = int(np.argmin(active._margins(active.quick_probs(x_lab, y_lab, x_pool, 2))))
    rng = np.random.default_rng(5)
    copies = x_pool[least_sure] + 1e-4 * rng.standard_normal((8, 8)).astype(np.float32)  # the least sure, 8 more times
    x_pool = np.concatenate([x_pool, copies])
    twins = {least_sure} | set(range(320, 328))
    ranking = active.rank_pool(x_lab, y_lab, x_pool, 2, n=10, random_share=0.0, seed=0)
    plain = np.argsort(active._margins(ranking.probs))[:10]
    assert len(twins & set(plain.tolist())) >= 8  # the test could fail: plain margin asks the copies
    assert len(twins & set(ranking.order)) == 1
    z = active._embed(np.concatenate([x_lab, x_pool]))[len(x_lab):][ranking.order]
    distances = 1 - z @ z.T
    assert distances[~np.eye(10, dtype=bool)].min() > active.NEAR_DUPLICATE


def test_cold_start_covers_the_unlabelled_regions_first():
    # Four regions; one label in each of the first two; the other two have none yet.
    centres = 4 * np.eye(6)[:4]
    x_pool, region = blobs(centres, 25, 0.5, seed=3)
    x_lab = np.stack([x_pool[0], x_pool[25]]) + 0.01
    ranking = active.rank_pool(x_lab, np.array([0, 1]), x_pool, 2, n=10, classes=CLASSES, seed=0)
    assert ranking.cold_start
    novel = [p for p in ranking.picks if p.kind == NOVEL]
    assert len(novel) == 9 and all(p.reason == REASON_NOVEL for p in novel)
    assert {int(region[p.index]) for p in novel[:2]} == {2, 3}  # the two unlabelled regions come first
    assert {int(region[p.index]) for p in novel} == {0, 1, 2, 3}
    # Typical, not outlying: each first pick sits near its region's centre.
    for p in novel[:2]:
        members = x_pool[region == region[p.index]]
        dist = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(x_pool[p.index] - members.mean(0)) <= np.quantile(dist, 0.5)


def test_no_model_yet_with_one_class_labelled():
    x_pool, _ = blobs(3 * np.eye(4)[:3], 10, 0.5, seed=1)
    ranking = active.rank_pool(x_pool[:2], np.array([0, 0]), x_pool[2:], 3, n=5, seed=0)
    assert ranking.probs is None and ranking.cold_start
    assert all(p.suggestion is None and p.probability is None and p.reason for p in ranking.picks)


@pytest.mark.parametrize("share,n,expected", [(0.1, 50, 5), (0.25, 40, 10), (0.0, 30, 0), (0.1, 9, 0)])
def test_the_random_share_holds_on_every_prefix(share, n, expected):
    x_lab, y_lab, x_pool = two_classes()
    picks = active.rank_pool(x_lab, y_lab, x_pool, 2, n=n, random_share=share, seed=1).picks
    assert len(picks) == n and len({p.index for p in picks}) == n
    randoms = [j for j, p in enumerate(picks) if p.kind == RANDOM]
    assert len(randoms) == expected
    assert all(picks[j].reason == REASON_RANDOM for j in randoms)
    for j in range(1, n + 1):
        assert sum(p.kind == RANDOM for p in picks[:j]) == int(np.floor(j * share + 1e-9))


def test_the_whole_inbox_is_ordered_once():
    x_lab, y_lab, x_pool = two_classes()
    order = active.rank_pool(x_lab, y_lab, x_pool, 2, n=None, seed=0).order
    assert sorted(order) == list(range(len(x_pool)))


def test_deterministic_for_a_seed():
    x_lab, y_lab, x_pool = two_classes()
    first = active.rank_pool(x_lab, y_lab, x_pool, 2, n=30, seed=7)
    again = active.rank_pool(x_lab, y_lab, x_pool, 2, n=30, seed=7)
    other = active.rank_pool(x_lab, y_lab, x_pool, 2, n=30, seed=8)
    assert [(p.index, p.kind, p.reason) for p in first.picks] == [(p.index, p.kind, p.reason) for p in again.picks]
    assert [p.index for p in first.picks if p.kind == RANDOM] != [p.index for p in other.picks if p.kind == RANDOM]


def snap(labels, estimate, predictions, **kw):
    return Snapshot(labels, estimate, dict(enumerate(predictions)), **kw)


def test_stopped_changing_needs_steady_predictions_and_estimate():
    steady = [0, 1] * 50
    history = [snap(100 + 10 * i, 0.90, steady) for i in range(4)]
    assert has_plateaued(history).stopped
    assert "unlikely to help" in has_plateaued(history).message
    assert not has_plateaued(history[:3]).stopped  # too few retrains
    moved = [1 - p if i < 5 else p for i, p in enumerate(steady)]  # 5 % of the Inbox flips
    assert not has_plateaued(history[:3] + [snap(130, 0.90, moved)]).stopped
    rising = [snap(100 + 10 * i, 0.80 + 0.02 * i, steady) for i in range(4)]
    assert not has_plateaued(rising).stopped
    # With its interval known, an estimate that wobbles inside it counts as steady.
    wobbly = [snap(100 + 10 * i, 0.80 + 0.02 * i, steady, low=0.75, high=0.92) for i in range(4)]
    assert has_plateaued(wobbly).stopped
    # Three retrains two labels apart span too few labels; earlier retrains join the window.
    close = [snap(100 + 2 * i, 0.9, steady) for i in range(4)]
    assert not has_plateaued(close).stopped
    assert has_plateaued([snap(80, 0.9, steady)] + close).stopped


def test_stopped_changing_compares_only_the_images_still_in_the_inbox():
    a = Snapshot(100, 0.9, {"a": 0, "b": 1, "c": 1})
    b = Snapshot(110, 0.9, {"b": 1, "c": 1, "d": 0})  # "a" was labelled, "d" arrived
    assert active._kappa(a.predictions, b.predictions) == 1.0
    assert active._kappa({"a": 0, "b": 1}, {"a": 1, "b": 0}) < 0


def test_honest_estimate_is_a_wilson_interval():
    p, low, high = active.honest_estimate([1] * 8 + [0] * 2, [1] * 10)
    assert p == 0.8 and low == pytest.approx(0.490, abs=1e-3) and high == pytest.approx(0.943, abs=1e-3)
    assert active.honest_estimate([], []) is None


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "active_learning.py"
    spec = importlib.util.spec_from_file_location("active_learning_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labels_to_target_is_where_the_curve_stays_above(bench):
    curve = [(10, 0.50), (20, 0.91), (30, 0.88), (40, 0.92), (50, 0.90), (60, 0.95)]
    assert bench.labels_to_target(curve, 0.90) == 40  # 20 reached it, but 30 fell back
    assert bench.labels_to_target(curve, 0.96) is None
    assert bench.labels_to_target(curve, 0.40) == 10


def test_ratio_and_the_targets(bench):
    assert bench.verdict(300, 150, 60) == (0.4, [])
    ratio, missed = bench.verdict(300, 150, 90)  # random needs half the pool: 0.6 is not enough
    assert ratio == 0.6 and len(missed) == 1
    assert bench.verdict(300, 50, 45) == (0.9, [])  # an easy set: anything up to 1.0 passes
    ratio, missed = bench.verdict(300, 50, 60)
    assert ratio == 1.2 and "more labels than random" in missed[0]
    assert bench.budgets(10, 35, 10) == [10, 20, 30, 35]
