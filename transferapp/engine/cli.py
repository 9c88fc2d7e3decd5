"""python -m transferapp.engine train|predict|bench ... (one JSON line per result on stdout)."""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import folder_samples, stratified_split
from .features import embed
from .predict import load_predictor
from .train import fit
from .zoo import WeightsUnavailable, create_backbone


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, WeightsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transferapp.engine")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub = p.add_subparsers(required=True)
    train = sub.add_parser("train", help="train on DATA_DIR (class folders, or train/ + val/)")
    train.add_argument("data_dir")
    train.add_argument("--out", required=True)
    _add_training_options(train)
    train.set_defaults(func=cmd_train)
    predict = sub.add_parser("predict", help="predict images with an artifact")
    predict.add_argument("artifact")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--alpha", type=float, default=None,
                         help="risk level: prediction sets miss the true class at most this often on average "
                              "(default: the model's, 0.1)")
    predict.set_defaults(func=cmd_predict)
    bench = sub.add_parser("bench", help="time and score a cold-cache training run")
    bench.add_argument("data_dir")
    bench.add_argument("--json", action="store_true", help="JSON line only (the default output too)")
    _add_training_options(bench)
    bench.set_defaults(func=cmd_bench)
    return p


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base")
    p.add_argument("--epochs", type=int)
    p.add_argument("--preset", choices=["fast", "best"])
    p.add_argument("--seed", type=int)
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--unfrozen-blocks", dest="unfrozen_blocks", type=int)
    p.add_argument("--augmentation")
    p.add_argument("--lr", type=float)
    p.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                   help="keep the model validation scored instead of retraining it on all images")
    p.add_argument("--cache-dir", dest="cache_dir", help="feature cache (default: a fresh temporary one)")


def _config(args) -> TrainConfig:
    keys = ("base", "epochs", "preset", "seed", "image_size", "unfrozen_blocks", "augmentation", "lr", "refit")
    return TrainConfig.from_dict({k: getattr(args, k) for k in keys})


def _split(data_dir, config):
    """Training and every choice see only the training images; a given val/ or test/ is held out."""
    classes, train, test = folder_samples(data_dir)
    inner_train, inner_val = stratified_split(train, config.val_fraction, config.seed)
    return classes, inner_train, inner_val, test


def cmd_train(args) -> int:
    """A val/ or test/ folder on disk is held out: scored by the final model, never chosen on."""
    config = _config(args)
    classes, train, val, test = _split(args.data_dir, config)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = fit(train, val, classes, config, Path(args.out), test=test, cache_dir=Path(args.cache_dir or tmp))
    keys = ("accuracy", "accuracy_ci", "n_scored", "balanced_accuracy", "baseline", "evaluated_on", "n_train",
            "n_val", "n_test", "classes", "seconds", "first_model_s", "first_model_accuracy", "chosen_stage",
            "chosen_reason")
    paths = {s.key: s.path for s in train + val}
    suspects = [paths[row["key"]] for row in metrics["suspected_mislabels"]]
    trust = metrics["trust"]
    print(json.dumps({**{k: metrics.get(k) for k in keys}, "validation": metrics.get("validation"),
                      "conformal": trust.get("eval"), "ece": (trust.get("reliability") or {}).get("ece"),
                      "suspected_mislabels": suspects}))
    return 0


def cmd_predict(args) -> int:
    predictor = load_predictor(args.artifact)
    for result in predictor.predict_paths(args.images, alpha=args.alpha):
        print(json.dumps(result))
    return 0


def cmd_bench(args) -> int:
    config = _config(args)
    classes, train, val, test = _split(args.data_dir, config)
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "artifact"
        started = time.perf_counter()
        metrics = fit(train, val, classes, config, out, cache_dir=cache)
        total_s = time.perf_counter() - started
        result = {"accuracy": metrics["accuracy"], "first_model_accuracy": metrics["first_model_accuracy"]}
        if test is not None:
            result = _score_on_test(out, cache, test, config, metrics)
    print(json.dumps({**result, "first_model_s": metrics["first_model_s"], "total_s": round(total_s, 2),
                      "strategy": metrics["strategy"], "chosen_stage": metrics["chosen_stage"],
                      "embed_ms_per_image": round(1000 * metrics["feature_seconds"] / max(1, metrics["n_embedded"]), 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "n_train": metrics["n_train"], "n_val": metrics["n_val"],
                      "n_test": len(test) if test is not None else 0, "base": config.base, "preset": config.preset}))
    return 0


def _score_on_test(out: Path, cache: Path, test, config: TrainConfig, metrics: dict) -> dict:
    """Accuracy of the chosen model and of the stage-1 model on the held-out images."""
    labels = np.array([s.label for s in test])
    backbone = create_backbone(config.base, image_size=config.image_size)
    x = torch.as_tensor(embed(test, backbone, cache_dir=cache, batch_size=config.batch_size))
    head = torch.nn.Linear(x.shape[1], len(metrics["classes"]))
    head.load_state_dict(torch.load(out / "stage1_head.pt", weights_only=True))
    with torch.no_grad():
        first_pred = head(x).argmax(1).numpy()
    # The final artifact, read back as the app would (it may be a retrained model, not stage 1's head).
    results = load_predictor(out).predict_paths([s.path for s in test])
    pred = np.array([metrics["classes"].index(r["top"]) for r in results])
    return {"accuracy": round(float((pred == labels).mean()), 4),
            "first_model_accuracy": round(float((first_pred == labels).mean()), 4),
            "internal_val_accuracy": metrics["accuracy"], "refit": metrics.get("refit")}
