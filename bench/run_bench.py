"""Benchmark the engine on the shared data sets against DESIGN.md's reference figures.

    .venv/bin/python bench/run_bench.py [--preset best|fast] [--only flowers|brick_crack]

Each data set runs in its own `python -m transferapp.engine bench` process (a cold feature cache,
honest peak RSS). Exits non-zero when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))

from transferapp.engine.data import folder_samples, stratified_split  # noqa: E402

# DESIGN.md, "What good looks like": linear probe (acc, s) and fine-tune 5 epochs (best acc, s).
REFERENCE = {"flowers": {"lp_acc": 0.880, "lp_s": 27, "ft_acc": 0.915, "ft_s": 224},
             "brick_crack": {"lp_acc": 0.981, "lp_s": 26, "ft_acc": 0.995, "ft_s": 248}}


def split_dir(name: str, tmp: Path) -> Path:
    """flowers ships train/ + val/; brick_crack gets a 70/30 stratified split (seed 0) as symlinks."""
    source = DATASETS / name
    if (source / "train").is_dir():
        return source
    classes, samples, _ = folder_samples(source)
    train, test = stratified_split(samples, 0.3, seed=0)
    for part, items in (("train", train), ("val", test)):
        for s in items:
            link = tmp / name / part / classes[s.label] / Path(s.path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(s.path)
    return tmp / name


def run_one(data_dir: Path, preset: str, base: str | None) -> dict:
    cmd = [sys.executable, "-m", "transferapp.engine", "--threads", "2", "bench", str(data_dir), "--json",
           "--preset", preset] + (["--base", base] if base else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def targets(ref: dict, r: dict, preset: str) -> list[tuple[str, bool]]:
    checks = [(f"first_model_s {r['first_model_s']} <= {0.4 * ref['lp_s']:.1f}", r["first_model_s"] <= 0.4 * ref["lp_s"]),
              (f"first_model_accuracy {r['first_model_accuracy']} >= {ref['lp_acc'] - 0.01:.3f}",
               r["first_model_accuracy"] >= ref["lp_acc"] - 0.01)]
    if preset == "best":
        goal = max(ref["lp_acc"], ref["ft_acc"])
        checks += [(f"accuracy {r['accuracy']} >= {goal}", r["accuracy"] >= goal),
                   (f"total_s {r['total_s']} <= {ref['ft_s']}", r["total_s"] <= ref["ft_s"])]
    return checks


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="best", choices=["fast", "best"])
    p.add_argument("--only", choices=list(REFERENCE))
    p.add_argument("--base")
    args = p.parse_args()
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:  # symlink splits live outside the repo
        for name, ref in REFERENCE.items():
            if args.only and name != args.only:
                continue
            r = run_one(split_dir(name, Path(tmp)), args.preset, args.base)
            print(f"\n{name}: {json.dumps(r)}")
            for text, ok in targets(ref, r, args.preset):
                print(f"  {'PASS' if ok else 'MISS'}  {text}")
                missed += not ok
    print(f"\n{'all targets met' if not missed else f'{missed} target(s) missed'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
