"""The GPU check: train the same images with the same seed on CUDA and on the CPU, compare the two
models' predictions on held-back images, and time both.

    .venv/bin/python bench/gpu_check.py                      # ../shared/datasets/flowers, 60 a class
    .venv/bin/python bench/gpu_check.py --data-dir DIR --limit 100 --presets fast,best
    .venv/bin/python bench/gpu_check.py --limit 6 --cpu-half # no GPU here: run the CPU half alone

Each half trains in its own interpreter (the CPU one with CUDA_VISIBLE_DEVICES="", so the engine's
pick_device() takes the CPU, as a CPU worker would) with its own empty feature cache, so the times
include computing the features. Both models are then scored the way the app serves them (load_predictor
on the CPU, float32), so what differs is what training on the GPU (bf16/fp16 autocast, cuDNN) changed.

Passes when, on the held-back images, the top labels agree on at least --min-agree of them and no
class probability differs by more than the preset's tolerance (--max-diff-fast, --max-diff-best:
fine-tuning in mixed precision drifts more than a linear head on bf16 features). Exits 1 on a
mismatch. Without a CUDA device it prints "no CUDA device: check not run" and exits 0: it never
reports a comparison it did not make.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# ../shared beside the checkout (a worktree one level deeper: ../../shared), or shared/ inside it.
DEFAULT_DATA = next((d / "shared" / "datasets" / "flowers" for d in (ROOT.parent, ROOT.parent.parent, ROOT)
                     if (d / "shared" / "datasets" / "flowers").is_dir()), ROOT.parent / "shared" / "datasets" / "flowers")


def main() -> int:
    args = _parser().parse_args()
    if args.half:
        return _train_half(args)
    if not Path(args.data_dir).is_dir():
        print(f"Data folder not found: {args.data_dir} (pass --data-dir)", file=sys.stderr)
        return 2
    cuda = _cuda_name()
    if not cuda:
        print("no CUDA device: check not run (torch.cuda.is_available() is false on this machine; "
              "nothing was compared and no GPU figure is reported).")
        if args.cpu_half:
            for preset in args.presets.split(","):
                cpu = _run_half("cpu", preset, args)
                print(f"[{preset}] CPU half only: {cpu['seconds']:.1f} s on {cpu['device']}, "
                      f"held-back accuracy {cpu['accuracy']:.3f} on {len(cpu['probs'])} images")
        return 0
    print(f"GPU: {cuda}")
    failed = False
    for preset in args.presets.split(","):
        gpu, cpu = _run_half("cuda", preset, args), _run_half("cpu", preset, args)
        verdict = _compare(gpu, cpu, args.min_agree, getattr(args, f"max_diff_{preset}"))
        failed |= not verdict["ok"]
        print(json.dumps({"preset": preset, **verdict}))
        print(f"[{preset}] {verdict['n']} held-back images: top labels agree on {verdict['agree']:.1%}, "
              f"largest probability difference {verdict['max_diff']:.4f} (mean {verdict['mean_diff']:.4f}); "
              f"accuracy CUDA {gpu['accuracy']:.3f} / CPU {cpu['accuracy']:.3f}; "
              f"time CUDA {gpu['seconds']:.1f} s ({gpu['device']}, {gpu['precision']}) vs CPU {cpu['seconds']:.1f} s "
              f"({cpu['device']}, {cpu['precision']}): {cpu['seconds'] / gpu['seconds']:.1f}x  "
              f"{'OK' if verdict['ok'] else 'MISMATCH'}")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="class folders, or train/ + val/ (default: flowers)")
    p.add_argument("--limit", type=int, default=60, help="training images a class (default 60)")
    p.add_argument("--held-back", type=int, default=20, help="held-back images a class, from val/ if there is one")
    p.add_argument("--presets", default="fast,best", help="comma-separated: fast, best (default both)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs for best (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-agree", type=float, default=0.95, help="share of top labels that must agree (0.95)")
    p.add_argument("--max-diff-fast", type=float, default=0.10, help="largest probability difference, fast (0.10)")
    p.add_argument("--max-diff-best", type=float, default=0.25, help="largest probability difference, best (0.25)")
    p.add_argument("--cpu-half", action="store_true", help="without CUDA, still run (and time) the CPU half")
    p.add_argument("--half", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def _run_half(device: str, preset: str, args) -> dict:
    """One half in a fresh interpreter; the CPU half sees no GPU at all."""
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--half", device, "--preset", preset, "--out", str(out),
                   "--data-dir", args.data_dir, "--limit", str(args.limit), "--held-back", str(args.held_back),
                   "--epochs", str(args.epochs), "--seed", str(args.seed)]
        subprocess.run(command, env=env, check=True)
        return json.loads(out.read_text())


def _samples(args):
    """(classes, training samples, held-back samples): the first --limit of each class trains, and
    --held-back others (from val/ when the set has one) are only predicted."""
    from transferapp.engine.data import folder_samples

    classes, train, val = folder_samples(args.data_dir)
    by_class = lambda samples, label: [s for s in samples if s.label == label]  # noqa: E731
    chosen, held = [], []
    for label in range(len(classes)):
        mine = by_class(train, label)
        chosen += mine[:args.limit]
        held += (by_class(val, label) if val else mine[args.limit:])[:args.held_back]
    if not held:
        raise SystemExit(f"No images left to hold back in {args.data_dir}: lower --limit.")
    return classes, chosen, held


def _train_half(args) -> int:
    import torch

    from transferapp.engine.config import TrainConfig
    from transferapp.engine.data import development_split
    from transferapp.engine.features import describe_device, pick_device
    from transferapp.engine.fitting import fit
    from transferapp.engine.predict import load_predictor
    from transferapp.engine.zoo import precision

    device = pick_device()
    if device.type != args.half:
        raise SystemExit(f"asked for the {args.half} half, but the engine picked {device.type}")
    classes, train, held = _samples(args)
    config = TrainConfig(preset=args.preset, epochs=args.epochs, seed=args.seed, time_budget_s=3600)
    inner_train, inner_val = development_split(train, config)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fit(inner_train, inner_val, classes, config, Path(tmp) / "model", cache_dir=Path(tmp) / "cache")
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        predictor = load_predictor(Path(tmp) / "model", device="cpu")  # as the web app serves it
        answers = predictor.predict_paths([s.path for s in held])
    probs = {s.key: [a["probabilities"][c] for c in classes] for s, a in zip(held, answers)}
    correct = sum(a["top"] == classes[s.label] for s, a in zip(held, answers))
    Path(args.out).write_text(json.dumps({
        "device": describe_device(device), "precision": precision(device), "seconds": seconds,
        "accuracy": correct / len(held), "probs": probs}))
    return 0


def _compare(gpu: dict, cpu: dict, min_agree: float, max_diff: float) -> dict:
    keys = sorted(cpu["probs"])
    diffs, agree = [], 0
    for key in keys:
        a, b = gpu["probs"][key], cpu["probs"][key]
        agree += max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__)
        diffs.append(max(abs(x - y) for x, y in zip(a, b)))
    share = agree / len(keys)
    return {"n": len(keys), "agree": share, "max_diff": max(diffs), "mean_diff": sum(diffs) / len(diffs),
            "tolerance": {"min_agree": min_agree, "max_diff": max_diff},
            "ok": share >= min_agree and max(diffs) <= max_diff}


if __name__ == "__main__":
    sys.exit(main())
