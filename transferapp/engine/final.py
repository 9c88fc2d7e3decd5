"""The final check of the kept model: held-out scores, calibration, the headline figures, the artifact."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import depth as engine_depth
from . import finetune, state
from . import metrics as M
from .calibrate import apply_temperature, calibrate, fit_temperature, head_input
from .config import TrainConfig
from .curve import learning_curve, verdict
from .data import eval_transform, stratified_split
from .features import file_digest
from .zoo import Averaged, Backbone, Classifier, precision


def _temperature(model, chosen, run, *, cal, val_probs, y_val, prep,
                 device) -> tuple[float, np.ndarray | None, np.ndarray]:
    """(temperature, the final model's probabilities on the set-aside images or None, the labels the
    temperature was fitted to)."""
    # A fine-tuned network's outputs (label smoothing, balanced classes) are not probabilities until
    # rescaled: one temperature serves every figure, the threshold table and predictions. It is
    # fitted, with the prediction sets, on the final model's scores of the set-aside images (or,
    # with too few validation images for that, on those that chose the epoch, and the page says so).
    cal_probs = _model_outputs(model, cal, prep, run.scoring_batch, device, run)[1] if cal else None
    fitted_on, y_fitted = (cal_probs, state.labels(cal)) if cal else (val_probs, y_val)
    temperature = fit_temperature(fitted_on, y_fitted) if chosen != "head" and len(y_fitted) >= 2 else 1.0
    return temperature, cal_probs, y_fitted


def check_final_model(model, chosen, run, *, scored, val_probs, y_val, dev, cross_fitted, test, cal, cal_probs,
                       y_fitted, temperature, refit, curve, classes, C, prep, device) -> tuple[dict, dict, dict]:
    """The "final" phase: (the report the page leads with, the trust figures, the arrays predict
    needs for them). `dev` and `test` are (samples, cached features); val_probs are rescaled by the
    temperature already. Adds the test accuracy after the retrain to `refit`, the verdict to `curve`."""
    (dev, x_dev), (test, x_test) = dev, test
    # Validation figures describe the model validation chose, before any retrain on all images.
    ordered = bool(run.config.class_order)
    report = M.report(val_probs, y_val, [s.key for s in scored], classes, ordered=ordered)
    run.phases.start("final", "Checking the final model", _final_estimate_s(run, chosen, model, len(dev), len(test)),
                     required=True)
    final = _final_outputs(model, chosen, run, dev=(dev, x_dev), test=(test, x_test), prep=prep, device=device)
    y_test = state.labels(test)
    test_probs = apply_temperature(final["test_probs"], temperature) if test else None
    served_oof = _served_out_of_fold(chosen, refit, cross_fitted, scored is dev, test)
    report = _headline_report(report, test, test_probs, y_test, classes=classes, ordered=ordered,
                              out_of_fold=scored is dev, served_oof=served_oof and (cross_fitted.probs, dev))
    report["headline_model"] = _headline_model(report, refit)
    if refit and test:
        refit["test_accuracy_after"] = report["accuracy"]
    eval_probs, eval_labels = (test_probs, y_test) if test else (val_probs, y_val)
    # The threshold table counts the same images as the headline. The prediction sets are still
    # measured on validation images: the out-of-fold scores are the ones their threshold was fitted to.
    scored_probs, scored_labels = (cross_fitted.probs, state.labels(dev)) if served_oof else (eval_probs, eval_labels)
    if len(classes) == 2:  # what the page's decision-threshold control trades off, image by image
        report["eval_scores"] = [[int(y), round(float(p[1]), 4)] for p, y in zip(scored_probs, scored_labels)]
    if curve:
        curve.update(verdict(curve, kept_recall={n: m["recall"] for n, m in report["per_class"].items()}))
    trust, trust_arrays = calibrate(
        dev_features=final["dev_features"], dev_labels=state.labels(dev), dev_keys=[s.key for s in dev],
        oof_features=x_dev, cross_fitted=cross_fitted, C=C, n_classes=len(classes),
        finetuned=chosen != "head", temperature=temperature,
        val_probs=apply_temperature(cal_probs, temperature) if cal else val_probs, val_labels=y_fitted, set_aside=bool(cal),
        eval_probs=eval_probs, eval_labels=eval_labels, seed=run.config.seed, dev_groups=state.groups(dev))
    run.phases.finish("final")
    return report, trust, trust_arrays


def _served_out_of_fold(chosen, refit, cross_fitted, out_of_fold, test) -> bool:
    """Whether the headline can be the out-of-fold estimate of the model that is served: a kept quick
    model retrained on every image is the average of the cross-fitted fold models, and each image's
    out-of-fold score comes from one of those models that did not see it. With test images, the test
    figure (scored after the retrain) already describes it; a small project is out-of-fold already."""
    return (not test and not out_of_fold and chosen == "head" and cross_fitted is not None
            and bool(refit and refit.get("done")))


def _headline_model(report: dict, refit: dict | None) -> str:
    """Which model the headline describes: "served" (the model predictions use, or the out-of-fold
    estimate of the procedure that made it) or "before_retrain" (the validated model, which was then
    retrained on every image: the served model may answer those images differently)."""
    retrained = bool(refit and refit.get("done"))
    return "before_retrain" if report["evaluated_on"] == "validation" and retrained else "served"


def _headline_report(val_report, test, test_probs, y_test, *, classes, ordered, out_of_fold, served_oof=None) -> dict:
    """The test images' figures when there are any, with validation's summary beside them; else the
    out-of-fold estimate of the served quick model over every training and validation image
    (`served_oof`: (probabilities, images)), with validation's summary beside it; else validation's
    (or, in a small project, the out-of-fold ones)."""
    if test:  # the headline: images that took part in nothing
        return {**M.report(test_probs, y_test, [s.key for s in test], classes, ordered=ordered),
                "evaluated_on": "test", "validation": {**_summary(val_report), "out_of_fold": out_of_fold}}
    if served_oof:
        probs, dev = served_oof
        return {**M.report(probs, state.labels(dev), [s.key for s in dev], classes, ordered=ordered),
                "evaluated_on": "out_of_fold", "refit_out_of_fold": True,
                "validation": {**_summary(val_report), "out_of_fold": False}}
    return {**val_report, "evaluated_on": "out_of_fold" if out_of_fold else "validation"}


def _result(report, trust, run, *, train, val, cal, test, classes, chosen, reason, refit, depth, stage1, curve,
            device, started, first_model_s, first_model_accuracy) -> dict:
    """fit()'s return value, also meta.json's metrics: the report, how far to trust the model, and
    how it was made."""
    config = run.config
    return {**report, "n_train": len(train), "n_val": len(val), "n_calibration_set_aside": len(cal),
            "n_test": len(test), "classes": list(classes),
            "trust": trust, "suspected_mislabels": trust.pop("suspected_mislabels"),
            "odd_ones_out": trust.pop("odd_ones_out"),
            "history": run.history, "chosen_stage": chosen, "chosen_reason": reason, "refit": refit,
            "seconds": round(time.perf_counter() - started, 2), "first_model_s": round(first_model_s, 2),
            "first_model_accuracy": first_model_accuracy, "base": config.base, "config": asdict(config),
            "stage1_c": stage1["C"], "feature_seconds": round(run.feature_seconds, 2),
            "n_embedded": run.n_embedded, "precision": precision(device),
            "strategy": _strategy(chosen, stage1, config, run.history, refit, depth), "depth": depth,
            "learning_curve": curve, "stage_choice": run.stage_choice,
            "discarded_s": discarded_s(chosen, run.phases.rows), "stopped_early_s": stopped_early_s(run.phases.rows),
            "phases": run.phases.rows}


# The phases that train a network (the quick model's seconds-long fit is in every artifact).
TRAINING_PHASES = ("finetune", "refit")


def discarded_s(chosen: str, phases: list[dict]) -> float:
    """Seconds of training spent on stages the kept model does not contain: fine-tuning (and its
    retrain) when the quick model alone is kept; 0 when the fine-tuned model or the average of both
    is kept. The quick model itself is part of every artifact (the first model, and the ensemble).
    A stage a rule stopped before half its plan (stopped_early_s) counts apart: the price of deciding."""
    if chosen != "head":
        return 0.0
    return round(sum(r["actual_s"] or 0.0 for r in phases
                     if r["phase"] in TRAINING_PHASES and not r.get("stopped_early")), 1)


def stopped_early_s(phases: list[dict]) -> float:
    """Seconds of training stages stopped before half their plan: by the budget's pricing after a
    batch or two, or by the payoff rule (payoff.py)."""
    return round(sum(r["actual_s"] or 0.0 for r in phases if r["phase"] in TRAINING_PHASES and r.get("stopped_early")), 1)

# Validation images needed before a third of them are set aside to calibrate a fine-tuned model
# (20 of 60: enough for prediction sets at alpha 0.1, which need 9, and for a temperature).
SET_ASIDE_MIN_VAL = 60

SET_ASIDE_SHARE = 1 / 3


def set_aside_for_calibration(val, x_val, config):
    """(choosing images, their features, set-aside images, their features). Fine-tuning picks its
    epoch and stage on validation images, which makes their scores optimistic for that model; a
    temperature and prediction sets fitted on them would promise more than new images get. With
    enough of them, a stratified third (groups kept whole) chooses nothing, is never trained on,
    and calibrates the fine-tuned model instead."""
    if config.preset != "best" or len(val) < SET_ASIDE_MIN_VAL:
        return val, x_val, [], x_val[:0]
    choosing, set_aside = stratified_split(val, SET_ASIDE_SHARE, config.seed + 1)
    row = {s.key: i for i, s in enumerate(val)}
    return (choosing, x_val[[row[s.key] for s in choosing]], set_aside, x_val[[row[s.key] for s in set_aside]])


def _summary(report: dict) -> dict:
    keys = ("accuracy", "accuracy_ci", "n_scored", "n_correct", "balanced_accuracy", "baseline", "per_class",
            "mean_abs_grade_error", "within_one_grade")
    return {k: report.get(k) for k in keys}


def check_held_out(train, val, test) -> None:
    held = {s.key for s in test}
    if held & {s.key for s in train + val}:
        raise ValueError("An image is both in the test set and in the training or validation images.")


def _final_outputs(model, chosen, run, *, dev, test, prep, device) -> dict:
    """The final model's features of the development images (its novelty bank) and its
    probabilities on the test images; `dev` and `test` are (samples, cached features). A kept quick
    model's body is the pretrained one, so the cached features are its features; a fine-tuned body
    has to look at the images again."""
    (dev, x_dev), (test, x_test) = dev, test
    if chosen == "head":
        head = copy.deepcopy(model.head).cpu()
        return {"dev_features": x_dev, "test_probs": state.head_probs(head, x_test) if len(test) else None}
    dev_feats, _ = _model_outputs(model, dev, prep, run.scoring_batch, device, run, probabilities=False)
    test_probs = _model_outputs(model, test, prep, run.scoring_batch, device, run)[1] if test else None
    return {"dev_features": dev_feats, "test_probs": test_probs}


def _final_estimate_s(run, chosen, model, n_dev, n_test) -> float | None:
    """The fine-tuned model looks at every image again (the test images twice with mirrored
    averaging), at about the pace the features were computed. A kept quick model reuses the cached
    features, and what is left (out-of-fold fits for the trust figures) has no measured pace to
    price it by."""
    if chosen == "head" or not run.n_embedded:
        return None  # every feature came from the cache: no pace measured
    passes = (2 if model.flip_tta else 1) + (chosen == "ensemble")  # an ensemble's quick half looks once more
    return run.feature_seconds / run.n_embedded * (n_dev + n_test * passes)


def test_accuracy(model, chosen, test, x_test, backbone, device, run) -> float:
    if chosen == "head":
        probs = state.head_probs(copy.deepcopy(model.head).cpu(), x_test)
    else:
        probs = _model_outputs(model, test, backbone.preprocessing, run.scoring_batch, device, run)[1]
    return round(float((probs.argmax(1) == state.labels(test)).mean()), 4)


def _model_outputs(model, samples, prep, batch_size, device, run, probabilities=True) -> tuple[np.ndarray, np.ndarray | None]:
    """(penultimate features, probabilities) of the model on the images, as Predictor computes them.
    No cancellation check: the model is final by now (a cancelled retrain keeps the validated one),
    and one forward pass over the images finishes the run. probabilities=False: the features only
    (of the images as they are, as Predictor's novelty check takes them), without the mirrored pass."""
    transform, feats, probs = eval_transform(prep), [], []
    model.eval().to(device=device, memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            x = finetune.load_batch(samples[start:start + batch_size], transform, prep).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            with head_input(model) as seen:
                p = model.predict_proba(x) if probabilities else model(x)
            feats.append(seen[0].float().cpu())
            probs.append(p.float().cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy() if probabilities else None


def _learning_curve(x_train, y_train, x_val, y_val, classes, C) -> dict | None:
    """Only meaningful with a few images of every class on both sides."""
    enough = len(y_val) >= 2 * len(classes) and np.bincount(y_train, minlength=len(classes)).min() >= 4
    return learning_curve(x_train, y_train, x_val, y_val, classes, C=C) if enough else None


def _strategy(chosen: str, stage1: dict, config: TrainConfig, history: list[dict], refit: dict | None,
              depth: dict | None) -> str:
    if chosen == "head":
        text = f"linear head on cached {config.base} features (C={stage1['C']})"
    else:
        epochs = sum(1 for h in history if h["stage"] == "finetune")
        trained = engine_depth.depth_words(depth["first_trained_stage"], depth["stages"])
        text = (f"linear head (C={stage1['C']}) then fine-tuned {trained} "
                f"for {epochs} epoch{'s' if epochs != 1 else ''} ({config.augmentation} augmentation)")
        if chosen == "ensemble":
            text = f"average of a {text} and the linear head alone"
    if refit and refit["done"]:
        text += f", then retrained on all {refit['n_images']} images" + (
            f" for {refit['epochs']} epochs" if refit["epochs"] else "")
    return text


# --- artifact -------------------------------------------------------------------------------

ENSEMBLE_FILE = "quick_model.pt"  # an ensemble's quick half (zoo.Averaged.quick)

TRAINED_ON = "trained_on.sha256"


def trained_on(train, val, refit: dict | None) -> list:
    """The images the served model learnt from: the training images, and the validation ones too
    once it was retrained on every image (a kept quick model's set-aside images rejoined `val`)."""
    return list(train) + (list(val) if refit and refit.get("done") else [])


def write_trained_on(out_dir: Path, samples) -> None:
    """TRAINED_ON: the sha256 of each image file the model learnt from, one a line, so a prediction
    (app, command line, bundle) can say "this image was used to train this model" without a database."""
    lines = sorted({file_digest(s.path) for s in samples})
    tmp = Path(out_dir) / (TRAINED_ON + ".tmp")
    tmp.write_text("".join(f"{h}\n" for h in lines))
    tmp.replace(Path(out_dir) / TRAINED_ON)


def save_artifact(out_dir: Path, model: Classifier, *, stage1_head: nn.Linear, backbone: Backbone,
                  classes: list[str], config: TrainConfig, result: dict, trust_arrays: dict | None = None,
                  trained_on: list | None = None) -> None:
    """model.pt (full state dict) + meta.json: enough to predict without the database; with
    `trained_on` (samples), TRAINED_ON lists their hashes."""
    import timm
    import torchvision
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: the web process may be loading the previous (stage-1) model.
    # CPU copies, without moving the model itself (fit() may still be using it on the GPU).
    ensemble = isinstance(model, Averaged)
    served = model.finetuned if ensemble else model
    _save_atomically({k: v.detach().cpu() for k, v in served.state_dict().items()}, out / "model.pt")
    if ensemble:  # the quick half: the pretrained body and its head, served beside the fine-tuned one
        _save_atomically({k: v.detach().cpu() for k, v in model.quick.state_dict().items()}, out / ENSEMBLE_FILE)
    else:
        (out / ENSEMBLE_FILE).unlink(missing_ok=True)
    # The stage-1 head alone (a few KB): lets bench score the first model on a held-out test set.
    torch.save(stage1_head.state_dict(), out / "stage1_head.pt")
    if trust_arrays:  # what predict needs for prediction sets and the novelty check, without the DB
        np.savez(out / "trust.npz.tmp.npz", **trust_arrays)
        (out / "trust.npz.tmp.npz").replace(out / "trust.npz")
    if trained_on is not None:
        write_trained_on(out, trained_on)
    meta = {"format": 1, "classes": list(classes), "base": config.base, "feature_dim": backbone.feature_dim,
            "fp32_from": model.fp32_from, "flip_tta": model.flip_tta,
            "ensemble": {"file": ENSEMBLE_FILE, "temperatures": list(model.temperatures)} if ensemble else None,
            "preprocessing": backbone.preprocessing, "config": asdict(config), "metrics": result,
            "trust": result.get("trust"),
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__}}
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / "meta.json")


def _save_atomically(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
