"""Small data first (#15 item 0): the engine on 5, 10 and 20 images a class against the plain linear
probe trained on the same draw, both scored on the set's held-back images.

    .venv/bin/python bench/small_data_bench.py [--draws 5] [--only flowers|brick_crack|knee_kl]

For every shared set, size and seeded draw (images drawn from the training pool; flowers and knee_kl
keep their val/, brick_crack gets the 70/30 split of bench/run_bench.py):
- plain: scikit-learn LogisticRegression(max_iter=1000) on the frozen features of the draw (the
  reference's linear probe, DESIGN.md), no split, no tuning;
- engine: fit() exactly as the app calls it (data.development_split, default settings, preset
  "best"); its final model scored on the held-back images;
- first: the engine's quick first model (the same fit_linear_head call fit() makes first; for a
  small project it is also the final model, so the two columns agree);
- split: the engine made to hold a validation share out as before (small_data_below=0, preset
  "fast"): what holding images out used to cost.
Prints the table (means over draws, with the spread) and exits non-zero where the engine trails the
plain probe by more than 1 point, or its first model trails the final one by more than 3 points.
Needs the bench extra (scikit-learn).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferapp.engine import TrainConfig, fit, folder_samples, load_predictor  # noqa: E402
from transferapp.engine.data import development_split, stratified_split  # noqa: E402
from transferapp.engine.features import embed  # noqa: E402
from transferapp.engine.head import fit_linear_head  # noqa: E402
from transferapp.engine.zoo import create_backbone  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
SIZES = (5, 10, 20)
MAX_BEHIND_PLAIN = 0.01
MAX_FIRST_BEHIND_FINAL = 0.03


def pools(name: str):
    """(classes, training pool, held-back images) as the other benches split the set."""
    if (DATASETS / name / "train").is_dir():
        classes, pool, _ = folder_samples(DATASETS / name / "train")
        _, held, _ = folder_samples(DATASETS / name / "val")
        return classes, pool, held
    classes, samples, _ = folder_samples(DATASETS / name)
    pool, held = stratified_split(samples, 0.3, seed=0)
    return classes, pool, held


def draw(pool, n_classes: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [pool[i] for c in range(n_classes)
            for i in rng.permutation([i for i, s in enumerate(pool) if s.label == c])[:n]]


def head_accuracy(head, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((head(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


def check_scoring(out: Path, held, x_held: np.ndarray, head) -> None:
    """The bench scores a kept quick model on cached features; the app's predictor must agree."""
    predictor = load_predictor(out)
    served = predictor.predict_paths([s.path for s in held[:40]])
    with torch.no_grad():
        mine = torch.softmax(head(torch.as_tensor(x_held[:40])), -1)
    # The cached features may come from a faster, lower-precision pass than the predictor's float32:
    # the probabilities must agree closely (a near-tie may still flip a label, hence no label check).
    gap = max(abs(r["confidence"] - float(mine[i, predictor.classes.index(r["top"])])) for i, r in enumerate(served))
    if gap > 0.02:
        sys.exit(f"scoring on cached features disagrees with the app's predictor (probabilities differ by {gap:.3f})")


def engine_accuracy(samples, classes, config: TrainConfig, cache: Path, held, x_held, y_held, check=False):
    train, val = development_split(samples, config)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = fit(train, val, classes, config, Path(tmp), cache_dir=cache)
        if metrics["chosen_stage"] != "head":  # a fine-tuned body: only the predictor can score it
            predictor = load_predictor(tmp)
            served = [r["top"] for r in predictor.predict_paths([s.path for s in held])]
            return float(np.mean([top == classes[s.label] for top, s in zip(served, held)])), metrics
        model = torch.load(Path(tmp) / "model.pt", map_location="cpu", weights_only=True)
        head = torch.nn.Linear(x_held.shape[1], len(classes))
        head.load_state_dict({"weight": model["head.weight"], "bias": model["head.bias"]})
        if check:
            check_scoring(Path(tmp), held, x_held, head)
        return head_accuracy(head, x_held, y_held), metrics


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--only", choices=["flowers", "brick_crack", "knee_kl"])
    args = p.parse_args()
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        sys.exit("scikit-learn is needed for the plain probe: pip install -e '.[bench]'")
    torch.set_num_threads(2)
    backbone = create_backbone("efficientnet_lite0")
    missed = 0
    print("set          n/class  plain          engine         first          split (held out)   s/fit")
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        for name in ("flowers", "brick_crack", "knee_kl"):
            if args.only and name != args.only:
                continue
            classes, pool, held = pools(name)
            x_pool = dict(zip((s.path for s in pool), embed(pool, backbone, cache_dir=cache)))
            x_held = embed(held, backbone, cache_dir=cache)
            y_held = np.array([s.label for s in held])
            for n in SIZES:
                rows = {"plain": [], "engine": [], "first": [], "split": []}
                seconds = []
                for seed in range(args.draws):
                    samples = draw(pool, len(classes), n, seed)
                    x = np.stack([x_pool[s.path] for s in samples])
                    y = np.array([s.label for s in samples])
                    plain = LogisticRegression(max_iter=1000).fit(x, y)
                    rows["plain"].append(float((plain.predict(x_held) == y_held).mean()))
                    rows["first"].append(head_accuracy(fit_linear_head(x, y, len(classes))[0], x_held, y_held))
                    t0 = time.perf_counter()
                    acc, _ = engine_accuracy(samples, classes, TrainConfig(seed=seed), cache, held, x_held, y_held,
                                             check=seed == 0 and n == SIZES[0])
                    seconds.append(time.perf_counter() - t0)
                    rows["engine"].append(acc)
                    split = TrainConfig(seed=seed, preset="fast", small_data_below=0)
                    rows["split"].append(engine_accuracy(samples, classes, split, cache, held, x_held, y_held)[0])
                mean = {k: float(np.mean(v)) for k, v in rows.items()}
                cells = "  ".join(f"{mean[k]:.3f}±{np.std(rows[k]):.3f}" for k in ("plain", "engine", "first", "split"))
                print(f"{name:12s} {n:7d}  {cells}    {np.mean(seconds):5.1f}", flush=True)
                if mean["engine"] < mean["plain"] - MAX_BEHIND_PLAIN:
                    print(f"  MISS engine {mean['engine']:.3f} trails the plain probe {mean['plain']:.3f} by more than "
                          f"{MAX_BEHIND_PLAIN}")
                    missed += 1
                if mean["first"] < mean["engine"] - MAX_FIRST_BEHIND_FINAL:
                    print(f"  MISS first model {mean['first']:.3f} trails the final {mean['engine']:.3f} by more than "
                          f"{MAX_FIRST_BEHIND_FINAL}")
                    missed += 1
    print(f"\n{'all targets met' if not missed else f'{missed} target(s) missed'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
