"""python -m transferapp.engine train|predict|bench ... (one JSON line per result on stdout)."""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from .config import DEPTHS, TrainConfig
from .data import development_split, folder_samples, grouped_by_name, is_image_file
from .features import embed
from .fitting import fit
from .ordinal import natural_order
from .features import file_digest
from .predict import decode_each, load_predictor
from .zoo import WeightsUnavailable, create_backbone


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, WeightsUnavailable, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or folder"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m transferapp.engine",
                                description="Train, use and benchmark image classifiers without the web app.")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub = p.add_subparsers(required=True)
    train = sub.add_parser("train", help="train on DATA_DIR (class folders, or train/ + val/)",
                           description="Train a classifier; prints one JSON line with its scores.")
    train.add_argument("data_dir", help="one folder per class, or train/ and val/ (or test/) folders of class folders")
    train.add_argument("--out", required=True, help="folder to write the model to (meta.json + model.pt)")
    _add_training_options(train)
    train.set_defaults(func=cmd_train)
    predict = sub.add_parser("predict", help="predict images with a trained model",
                             description="Classify images; prints one JSON line per image.")
    predict.add_argument("artifact", help="the model: the zip downloaded from the app, the folder it unzips to, "
                                          "or the model folder itself (meta.json + model.pt)")
    predict.add_argument("images", nargs="+", help="image files, or folders of images (read recursively)")
    predict.add_argument("--alpha", type=float, default=None,
                         help="risk level: prediction sets miss the true class at most this often on average "
                              "(default: the model's, 0.1)")
    predict.add_argument("--heatmap", metavar="DIR", default=None,
                         help="also write where the model looked for its predicted class: one PNG per image "
                              "in DIR, named after the image (the JSON line gains its path)")
    predict.set_defaults(func=cmd_predict)
    bench = sub.add_parser("bench", help="time and score a cold-cache training run",
                           description="Train from a cold feature cache and print timings and scores as JSON.")
    bench.add_argument("data_dir", help="like train's DATA_DIR; a given val/ or test/ folder is scored as held out")
    bench.add_argument("--json", action="store_true", help="JSON line only (the default output too)")
    _add_training_options(bench)
    bench.set_defaults(func=cmd_bench)
    return p


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="base model name, e.g. efficientnet_lite0 (the default) or resnet50")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: chosen from the data size)")
    p.add_argument("--preset", choices=["fast", "best"], help="fast: new top layer only; best: then fine-tune (default)")
    p.add_argument("--seed", type=int, help="random seed for the split and training (default 0)")
    p.add_argument("--image-size", dest="image_size", type=int, help="input side in pixels (default: the base's own)")
    p.add_argument("--unfrozen-blocks", dest="unfrozen_blocks", type=int, help="top blocks fine-tuned in the best preset")
    p.add_argument("--depth", choices=DEPTHS,
                   help="how much of the network the best preset fine-tunes: the top blocks, every layer, or auto "
                        "(every layer when the pretrained features separate the classes poorly; the default)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float,
                   help="seconds the training may take before the final check (default 600)")
    p.add_argument("--augmentation", help="none, light, medium or strong")
    p.add_argument("--lr", type=float, help="learning rate (default: chosen per stage)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help=f"images per fine-tuning step (default {TrainConfig.batch_size})")
    p.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                   help="keep the model validation scored instead of retraining it on all images")
    p.add_argument("--refit-finetuned", dest="refit_finetuned", action="store_true", default=None,
                   help="retrain a fine-tuned model on all images too (off by default: about as long as "
                        "fine-tuning again, and it did not pay on held-out images)")
    p.add_argument("--cache-dir", dest="cache_dir", help="feature cache (default: a fresh temporary one)")
    p.add_argument("--group-pattern", dest="group_pattern",
                   help="regular expression on file names: images whose names give the same match (e.g. one "
                        "patient's ID) stay together in every split and fold; e.g. '^\\d+' or '^([^_]+)_'")
    p.add_argument("--ordered", action="store_true",
                   help="the classes are grades in the natural order of their folder names (KL0 < KL2 < KL10); "
                        "adds mean_abs_grade_error and within_one_grade")
    p.add_argument("--class-order", dest="class_order",
                   help="the classes are grades in this order, lowest first, comma-separated: KL0,KL2,KL3,KL4")


def _config(args) -> TrainConfig:
    keys = ("base", "epochs", "preset", "seed", "image_size", "unfrozen_blocks", "depth", "time_budget_s", "batch_size",
            "augmentation", "lr", "refit",
            "refit_finetuned", "class_order")
    return TrainConfig.from_dict({k: getattr(args, k) for k in keys})


def _split(data_dir, config, ordered=False, group_pattern=None):
    """Training and every choice see only the training images; a given val/ or test/ is held out.
    `ordered` with no explicit order: the folder names' natural order becomes the config's."""
    classes, train, test = folder_samples(data_dir)
    if ordered and not config.class_order:
        config.class_order = natural_order(classes)
    inner_train, inner_val = development_split(grouped_by_name(train, group_pattern), config)
    return classes, inner_train, inner_val, test


def cmd_train(args) -> int:
    """A val/ or test/ folder on disk is held out: scored by the final model, never chosen on."""
    config = _config(args)
    classes, train, val, test = _split(args.data_dir, config, args.ordered, args.group_pattern)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = fit(train, val, classes, config, Path(args.out), test=test, cache_dir=Path(args.cache_dir or tmp))
    keys = ("accuracy", "accuracy_ci", "n_scored", "balanced_accuracy", "baseline", "evaluated_on", "n_train",
            "n_val", "n_test", "classes", "seconds", "first_model_s", "first_model_accuracy", "chosen_stage",
            "chosen_reason", "phases")
    ordinal = {k: metrics[k] for k in ("mean_abs_grade_error", "within_one_grade") if k in metrics}  # grades only
    paths = {s.key: s.path for s in train + val}
    suspects = [paths[row["key"]] for row in metrics["suspected_mislabels"]]
    trust = metrics["trust"]
    print(json.dumps({**{k: metrics.get(k) for k in keys}, **ordinal, "validation": metrics.get("validation"),
                      "conformal": trust.get("eval"), "ece": (trust.get("reliability") or {}).get("ece"),
                      "suspected_mislabels": suspects}))
    return 0


def cmd_predict(args) -> int:
    images = _image_paths(args.images)  # a wrong image path is reported before the model loads
    with tempfile.TemporaryDirectory() as tmp:
        predictor = load_predictor(_model_folder(Path(args.artifact), Path(tmp)))
        if args.heatmap is None:
            results = predictor.predict_paths(images, alpha=args.alpha)
        else:
            results = _predict_with_heatmaps(predictor, images, args.alpha, Path(args.heatmap))
        for result in results:
            print(json.dumps(_with_seen_in_training(predictor, result)))
    return 0


def _with_seen_in_training(predictor, result: dict) -> dict:
    """A predicted line says whether its very file (same SHA-256) trained the model: that answer is
    no evidence of how the model does on new images."""
    if "error" in result:
        return result
    return {**result, "seen_in_training": file_digest(result["path"]) in predictor.trained_on}


def _predict_with_heatmaps(predictor, images: list[Path], alpha, out_dir: Path):
    """One overlay PNG per image, for its predicted class, from the forward pass that predicted it.
    Images sharing a file stem get -2, -3... so none overwrites another."""
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for start in range(0, len(images), predictor.batch_size):
        chunk = images[start:start + predictor.batch_size]
        decoded = decode_each(chunk)
        for path, reason in decoded:
            if isinstance(reason, str):
                yield {"path": str(path), "error": reason}
        readable = [(Path(path), image) for path, image in decoded if not isinstance(image, str)]
        results, evidence = predictor.predict_explained([image for _, image in readable], alpha=alpha)
        for (path, image), result, ev in zip(readable, results, evidence):
            target = out_dir / f"{_free_stem(path.stem, used)}.png"
            target.write_bytes(predictor.heat_map_png(image, ev, result["top"]))
            yield {"path": str(path), **result, "heatmap": str(target)}


def _free_stem(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name


def _model_folder(path: Path, scratch: Path) -> Path:
    """The folder holding meta.json, from what a user has after downloading a model: the zip, the
    folder it unzips to (one model folder inside), or the model folder itself."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a model: give the downloaded .zip or the folder it unzips to")
        with zipfile.ZipFile(path) as archive:
            archive.extractall(scratch)  # our own download: a few files under one folder
        path = scratch
    if (path / "meta.json").is_file():
        return path
    inner = [d for d in path.iterdir() if (d / "meta.json").is_file()]
    if len(inner) == 1:
        return inner[0]
    raise ValueError(f"{path} holds no model (no meta.json inside)" if not inner
                     else f"{path} holds {len(inner)} models: name one of its folders")


def _image_paths(items: list[str]) -> list[Path]:
    """Files as given; folders expanded to the images inside them."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if is_image_file(p))  # training's rule: DICOM too
            if not found:
                raise ValueError(f"{item}: no images in this folder")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    return paths


def cmd_bench(args) -> int:
    config = _config(args)
    classes, train, val, test = _split(args.data_dir, config, args.ordered, args.group_pattern)
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "artifact"
        started = time.perf_counter()
        metrics = fit(train, val, classes, config, out, cache_dir=cache)
        total_s = time.perf_counter() - started
        result = {"accuracy": metrics["accuracy"], "first_model_accuracy": metrics["first_model_accuracy"]}
        if test is not None:
            result = _score_on_test(out, cache, test, config, metrics, classes)
    print(json.dumps({**result, "first_model_s": metrics["first_model_s"], "total_s": round(total_s, 2),
                      "strategy": metrics["strategy"], "chosen_stage": metrics["chosen_stage"],
                      "discarded_s": metrics["discarded_s"],
                      "stopped_early_s": metrics.get("stopped_early_s", 0.0), "stage_choice": metrics.get("stage_choice"),
                      "embed_ms_per_image": round(1000 * metrics["feature_seconds"] / max(1, metrics["n_embedded"]), 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "n_train": metrics["n_train"], "n_val": metrics["n_val"],
                      "n_test": len(test) if test is not None else 0, "base": config.base, "preset": config.preset,
                      "depth": (metrics.get("depth") or {}).get("why"),
                      "depth_first_stage": (metrics.get("depth") or {}).get("first_trained_stage"),
                      "phases": metrics["phases"]}))
    return 0


def _score_on_test(out: Path, cache: Path, test, config: TrainConfig, metrics: dict, classes: list[str]) -> dict:
    """Accuracy of the chosen model and of the stage-1 model on the held-out images."""
    # The model lists the classes in its own order (grade order for ordered classes).
    labels = np.array([metrics["classes"].index(classes[s.label]) for s in test])
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
