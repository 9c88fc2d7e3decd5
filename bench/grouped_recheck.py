"""A clean re-check of the engine's settings on a split that none of them was read from.

    .venv/bin/python bench/grouped_recheck.py [DATA] [--group-pattern RE] [--test-share 0.3] [--time-budget S]

The engine's settings (the depth rule's threshold, the stage choice) were measured against the
shared sets' own val/ folders. This bench sets val/ aside and splits train/ alone, keeping every
group (one patient: both knees, follow-ups) on one side, into train/ and a held-out test folder,
then runs the reference (plain linear probe, 5-epoch full fine-tune) and the engine on it in the
same run. Default: knee_kl, one patient per leading number of the file name ("9004315L.png").
Exits non-zero when the engine's accuracy is below max(reference probe, reference fine-tune).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench  # noqa: E402

from transferapp.engine.data import folder_samples, grouped_by_name, stratified_split  # noqa: E402


def grouped_split(source: Path, pattern: str, share: float, out: Path) -> dict:
    """train/ of `source` split by group into out/train and out/val (held out), as symlinks."""
    classes, samples, _ = folder_samples(source / "train" if (source / "train").is_dir() else source)
    train, test = stratified_split(grouped_by_name(samples, pattern), share, seed=1)
    for part, items in (("train", train), ("val", test)):
        for s in items:
            link = out / part / classes[s.label] / Path(s.path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(s.path)
    groups = {part: {s.group or s.key for s in items} for part, items in (("train", train), ("test", test))}
    return {"train": len(train), "test": len(test), "groups_shared": len(groups["train"] & groups["test"])}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data", nargs="?", default=str(run_bench.DATASETS / "knee_kl"))
    p.add_argument("--group-pattern", default=r"^(\d+)")
    p.add_argument("--test-share", type=float, default=0.3)
    p.add_argument("--time-budget", dest="time_budget_s", type=float)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split"
        sizes = grouped_split(Path(args.data), args.group_pattern, args.test_share, split)
        print(f"split of train/ by group: {json.dumps(sizes)}", flush=True)
        if sizes["groups_shared"]:
            sys.exit("a group landed on both sides of the split")
        ref = run_bench.measure_reference(split)
        r = run_bench._json_line([sys.executable, "-m", "transferapp.engine", "--threads", "2", "bench", str(split),
                                  "--json", "--preset", "best", "--group-pattern", args.group_pattern]
                                 + (["--time-budget", str(args.time_budget_s)] if args.time_budget_s else []))
        r.pop("phases", None)
        goal = max(ref["lp_acc"], ref["ft_acc"])
        print(json.dumps({"reference": ref, "engine": {k: r.get(k) for k in (
            "accuracy", "chosen_stage", "depth_first_stage", "depth", "discarded_s", "stopped_early_s", "total_s")}}))
        ok = r["accuracy"] >= goal
        print(f"{'PASS' if ok else 'MISS'}  accuracy {r['accuracy']} >= max(probe, fine-tune) {goal}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
