"""Proof for "label these next" (#24 item 4): how many labels the Inbox's order needs against random
order to get a quick model within a point of the one trained on every label.

    .venv/bin/python bench/active_learning.py DATA [--seeds 5] [--step 10] [--json] [--svg PATH]

DATA holds train/<class>/ (the pool: its labels are hidden and revealed one at a time, as an
oracle) and test/<class>/ (val/ when there is no test/); a folder of class folders with no split
gets the fixed stratified 70/30 split (seed 0) of bench/run_bench.py. Features are computed once with
the app's extractor (engine/features.py, the default base) and cached in a temporary folder
(--cache-dir keeps them). Every seed starts from 2 random labels a class and adds --step labels at a
time up to the whole pool, in random order or in the order engine/active.py gives (retrained after
every step, as the app's background retrain does); after each step the quick model the app trains
(head.fit_linear_head) is scored on test/.

C is chosen once, by the app's own cross-validated choice with every label of the pool (so the full
model is exactly the one the app trains on all labels), and kept for every step, strategy and seed:
a step's retrain costs one fit, not the app's cross-validation of six values (several times
slower), and both strategies end with the same labels and the same model (asserted). Both
strategies get that C alike. Prints one JSON object (--json) or a summary;
exits non-zero when the active order needs more labels than random (ratio > 1), or random needs
more than a third of the pool and the ratio is above 0.5.

Also measured: `retrain_s` (one quick-model fit, the retrain between labels), `order_s` (one
rank_pool call), and `stopped_changing`: for each seed of the active order, the first budget at
which active.has_plateaued fired (predictions on the rest of the pool and the honest estimate from
the random picks steady over the last retrains) and the test accuracy there (null: it never fired).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferapp.engine.active import (
    RANDOM,
    Snapshot,
    has_plateaued,
    honest_estimate,
    rank_pool,
)
from transferapp.engine.data import folder_samples, stratified_split
from transferapp.engine.features import embed
from transferapp.engine.head import fit_linear_head
from transferapp.engine.zoo import create_backbone

MARGIN = 0.01  # target = full_accuracy - MARGIN
HARD_SHARE = 1 / 3  # random needing more than this share of the pool ...
HARD_RATIO = 0.5  # ... must be beaten by at least this factor


def load_split(data: Path):
    """(classes, pool samples, test samples)."""
    data = Path(data)
    if (data / "train").is_dir():
        test_dir = next((data / n for n in ("test", "val") if (data / n).is_dir()), None)
        if test_dir is None:
            sys.exit(f"{data} has train/ but neither test/ nor val/")
        classes, pool, _ = folder_samples(data / "train")
        test_classes, test, _ = folder_samples(test_dir)
        if test_classes != classes:
            sys.exit(f"test classes {test_classes} differ from train classes {classes}")
        return classes, pool, test
    classes, samples, _ = folder_samples(data)
    pool, test = stratified_split(samples, 0.3, seed=0)
    return classes, pool, test


def labels_to_target(curve: list[tuple[int, float]], target: float) -> int | None:
    """The smallest budget from which the mean accuracy stays >= target at every larger budget."""
    found = None
    for labels, accuracy in reversed(curve):
        if accuracy < target:
            break
        found = labels
    return found


def verdict(pool: int, random_needs: int | None, active_needs: int | None) -> tuple[float | None, list[str]]:
    """ratio = active / random, and the targets missed."""
    if random_needs is None or active_needs is None:
        return None, ["a strategy never stays at the target (not even with the whole pool?)"]
    ratio = active_needs / random_needs
    missed = []
    if ratio > 1.0:
        missed.append(f"ratio {ratio:.2f} > 1.0: the active order needs more labels than random")
    if random_needs > HARD_SHARE * pool and ratio > HARD_RATIO:
        missed.append(f"random needs {random_needs} of {pool} (> a third) and ratio {ratio:.2f} > {HARD_RATIO}")
    return ratio, missed


def budgets(start: int, pool: int, step: int) -> list[int]:
    return list(range(start, pool, step)) + [pool]


def fit_and_score(x_pool, y_pool, rows, x_test, y_test, n_classes, C):
    """The quick model on the labelled rows (in a fixed order, so the same labels give the same model);
    (test accuracy, pool probabilities, the head, seconds the fit took)."""
    rows = np.sort(rows)
    started = time.perf_counter()
    head, _ = fit_linear_head(x_pool[rows], y_pool[rows], n_classes, C=C)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = float((head(torch.as_tensor(x_test)).argmax(1).numpy() == y_test).mean())
        probs = torch.softmax(head(torch.as_tensor(x_pool)), -1).numpy()
    return accuracy, probs, head, seconds


def run_seed(strategy: str, seed: int, x_pool, y_pool, x_test, y_test, n_classes, C, step, timings):
    """(the curve [(labels, test accuracy)], the last head, where the "stopped changing" signal first
    fired: (labels, test accuracy) or None; active order only)."""
    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), 2, replace=False) for c in range(n_classes)])
    labelled = list(start)
    rest = [i for i in rng.permutation(len(y_pool)) if i not in set(start)]  # random order
    curve, head, probs, history, stopped, checked = [], None, None, [], None, []
    for budget in budgets(len(start), len(y_pool), step):
        while len(labelled) < budget:
            unlabelled = np.setdiff1d(np.arange(len(y_pool)), labelled)
            if strategy == "random":
                labelled += rest[len(labelled) - len(start): budget - len(start)]
                continue
            started = time.perf_counter()
            ranking = rank_pool(x_pool[labelled], y_pool[labelled], x_pool[unlabelled], n_classes,
                                n=budget - len(labelled), batch=step, probs=probs[unlabelled],
                                seed=seed * 100_003 + len(labelled))
            timings["order_s"].append(time.perf_counter() - started)
            picked = [int(unlabelled[p.index]) for p in ranking.picks]
            # The random picks: the suggestion made before the label came, against the label.
            checked += [(p.suggestion, int(y_pool[i])) for p, i in zip(ranking.picks, picked) if p.kind == RANDOM]
            labelled += picked
        assert len(set(labelled)) == len(labelled) == budget
        accuracy, probs, head, seconds = fit_and_score(x_pool, y_pool, np.array(labelled), x_test, y_test, n_classes, C)
        timings["retrain_s"].append(seconds)
        curve.append((budget, accuracy))
        if strategy == "active" and stopped is None and budget < len(y_pool):
            inbox = np.setdiff1d(np.arange(len(y_pool)), labelled)
            estimate = honest_estimate(*zip(*checked)) if checked else (0.0, 0.0, 1.0)
            history.append(Snapshot(budget, estimate[0], dict(zip(inbox.tolist(), probs[inbox].argmax(1).tolist())),
                                    low=estimate[1], high=estimate[2]))
            if has_plateaued(history).stopped:
                stopped = (budget, accuracy)
    return curve, head, stopped


def features(samples, cache: Path) -> np.ndarray:
    return embed(samples, create_backbone("efficientnet_lite0"), cache_dir=cache)


def measure(data: Path, seeds: int, step: int, cache: Path) -> dict:
    classes, pool, test = load_split(data)
    started = time.perf_counter()
    x_pool, x_test = features(pool, cache), features(test, cache)
    features_s = time.perf_counter() - started
    y_pool, y_test = np.array([s.label for s in pool]), np.array([s.label for s in test])
    k = len(classes)
    started = time.perf_counter()
    C = fit_linear_head(x_pool, y_pool, k)[1]["C"]  # the app's own choice with every label, kept throughout
    app_choice_s = time.perf_counter() - started
    full_accuracy, _, full_head, _ = fit_and_score(x_pool, y_pool, np.arange(len(pool)), x_test, y_test, k, C)
    target = full_accuracy - MARGIN
    curves, result = {}, {}
    timings, stops = {"retrain_s": [], "order_s": []}, []
    for strategy in ("random", "active"):
        runs = []
        for seed in range(seeds):
            curve, head, stopped = run_seed(strategy, seed, x_pool, y_pool, x_test, y_test, k, C, step, timings)
            if strategy == "active":
                stops.append(stopped)
            # Same labels, same model: at the whole pool both strategies train the full model.
            assert curve[-1] == (len(pool), full_accuracy), (strategy, seed, curve[-1], full_accuracy)
            assert torch.equal(head.weight, full_head.weight) and torch.equal(head.bias, full_head.bias)
            runs.append([a for _, a in curve])
        mean = np.mean(runs, axis=0)
        curves[strategy] = [[b, round(float(a), 4)] for b, a in zip(budgets(2 * k, len(pool), step), mean)]
        result[strategy] = labels_to_target([(b, a) for b, a in curves[strategy]], target)
    ratio, missed = verdict(len(pool), result["random"], result["active"])
    return {"data": str(data), "classes": classes, "pool": len(pool), "test": len(test), "seeds": seeds,
            "step": step, "C": C, "full_accuracy": round(full_accuracy, 4),
            "target": round(target, 4), "curves": curves, "labels_to_target": result,
            "ratio": None if ratio is None else round(ratio, 3), "missed": missed,
            "retrain_s": {"mean": round(float(np.mean(timings["retrain_s"])), 3),
                          "max": round(float(np.max(timings["retrain_s"])), 3)},
            "order_s": {"mean": round(float(np.mean(timings["order_s"])), 3),
                        "max": round(float(np.max(timings["order_s"])), 3)},
            "stopped_changing": [None if s is None else {"labels": s[0], "accuracy": round(s[1], 4)} for s in stops],
            "app_C_choice_on_full_pool_s": round(app_choice_s, 2), "features_s": round(features_s, 1)}


def svg_chart(results: list[dict], width: int = 300, height: int = 200) -> str:
    """Accuracy against labels, random (grey) and active (blue), one panel a set, the target dashed."""
    pad, panels = 36, []
    for n, r in enumerate(results):
        ox = n * (width + 20)
        accs = [a for c in r["curves"].values() for _, a in c]
        lo, hi = min(accs), max(max(accs), r["full_accuracy"])
        lo = max(0.0, lo - 0.02)

        def xy(b, a, r=r, lo=lo, hi=hi, ox=ox):
            return (ox + pad + (width - pad - 8) * b / r["pool"],
                    8 + (height - pad - 8) * (1 - (a - lo) / max(hi - lo, 1e-6)))

        title = (f'<text x="{ox + pad}" y="{height + 14}" font-size="12">{Path(r["data"]).name}: random '
                 f'{r["labels_to_target"]["random"]}, active {r["labels_to_target"]["active"]} labels of '
                 f'{r["pool"]}</text>')
        parts = [title]
        for strategy, colour in (("random", "#888"), ("active", "#1f6feb")):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(b, a) for b, a in r["curves"][strategy]))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        (x0, ty), (x1, _) = xy(0, r["target"]), xy(r["pool"], r["target"])
        parts.append(f'<line x1="{x0:.1f}" y1="{ty:.1f}" x2="{x1:.1f}" y2="{ty:.1f}" stroke="#c00" '
                     f'stroke-dasharray="4 3"/>')
        (ax, ay), (bx, by) = xy(0, lo), xy(r["pool"], lo)
        parts.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#333"/>')
        parts.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{ax:.1f}" y2="8" stroke="#333"/>')
        parts.append(f'<text x="{ax - 4:.1f}" y="{ay:.1f}" font-size="10" text-anchor="end">{lo:.2f}</text>')
        parts.append(f'<text x="{ax - 4:.1f}" y="14" font-size="10" text-anchor="end">{hi:.2f}</text>')
        parts.append(f'<text x="{bx:.1f}" y="{ay + 12:.1f}" font-size="10" text-anchor="end">{r["pool"]}</text>')
        panels.append("".join(parts))
    total = len(results) * (width + 20)
    legend = (f'<text x="{pad}" y="{height + 32}" font-size="12"><tspan fill="#888">grey: random order</tspan> '
              f'<tspan fill="#1f6feb">blue: the Inbox order</tspan> <tspan fill="#c00">dashed: target '
              f'(all labels - 1 point)</tspan>; x: labels, y: test accuracy</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height + 40}" '
            f'font-family="sans-serif">{"".join(panels)}{legend}</svg>\n')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", type=Path, help="one or more data folders")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--step", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object (a list of them for several sets)")
    p.add_argument("--svg", type=Path, help="draw the curves into this SVG file")
    p.add_argument("--cache-dir", type=Path, help="keep the features here (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: these small fits run fastest on one, least of all on a busy machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        results = [measure(d, args.seeds, args.step, cache) for d in args.data]
    if args.svg:
        args.svg.write_text(svg_chart(results))
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        for r in results:
            print(f"{r['data']}: pool {r['pool']}, full accuracy {r['full_accuracy']}, target {r['target']}, "
                  f"labels to target random {r['labels_to_target']['random']} active "
                  f"{r['labels_to_target']['active']}, ratio {r['ratio']}, retrain {r['retrain_s']['mean']} s, "
                  f"order {r['order_s']['mean']} s, stopped changing at {r['stopped_changing']}; "
                  f"{'; '.join(r['missed']) or 'targets met'}")
    return 1 if any(r["missed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
