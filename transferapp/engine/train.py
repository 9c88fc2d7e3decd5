"""fit(): stage 1 (linear head on cached features) then, for preset "best", stage 2 (fine-tune the
top blocks, or every layer when the data is far from ImageNet, with augmentation); the better of the
two on validation becomes the artifact."""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics as M
from .calibrate import apply_temperature, calibrate, fit_temperature, head_input
from .config import TrainConfig
from .data import Sample, eval_transform, load_rgb, smallest_class, stratified_split, train_transform
from .curve import learning_curve, learning_curve_out_of_fold, verdict
from .head import class_weights, cross_fit, fit_linear_head
from .features import TrainingCancelled, embed, pick_device
from .ordinal import in_grade_order
from .phases import Phases, retrain_estimate_s
from .zoo import (Backbone, Classifier, create_backbone, frozen_runner, inference_batch_size, precision,
                  trains_in_mixed_precision)

__all__ = ["fit", "TrainingCancelled", "fit_linear_head", "class_weights"]

PATIENCE = 4  # stage-2 epochs that improve neither validation accuracy nor loss before stopping


def fit(train: list[Sample], val: list[Sample], classes: list[str], config: TrainConfig, out_dir: Path, *,
        test: list[Sample] | None = None, cache_dir: Path | None = None,
        on_progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
    """Train, write out_dir/model.pt + meta.json, return the metrics (also in meta.json).

    `test` images are held out: they are scored once, by the final model, and take part in no
    training, early stopping, choice of stage, calibration or retrain.

    No validation images (a small project: data.development_split) means every image trains the quick
    model (C chosen by cross-validation over all of them), nothing is fine-tuned (no held-out image could show it helps), and the
    figures are out-of-fold: each image scored by one of the cross-fitted models that did not see it."""
    started = time.perf_counter()
    test = list(test or [])
    if config.class_order:  # grades: from here on a class's index is its rank
        classes, (train, val, test) = in_grade_order(classes, config.class_order, train, val, test)
    _check_inputs(train, classes)
    _check_held_out(train, val, test)
    _seed_everything(config.seed)
    run = _Run(config, on_progress, should_stop, started)
    device, backbone = _device_and_backbone(run)
    x_train, x_val, x_test = run.features(train, val, backbone, cache_dir, device, test)
    val, x_val, cal, x_cal = _set_aside_for_calibration(val, x_val, config)
    y_train, y_val = _labels(train), _labels(val)
    out_of_fold = not val

    run.phases.start("head", "Quick model", None)
    head, stage1, val_probs1, row = _quick_model(x_train, y_train, x_val, y_val, n_classes=len(classes),
                                                 groups=_groups(train))
    first_model_s = time.perf_counter() - started
    model, stage1_state = _publish_first_model(out_dir, run, head, row, backbone=backbone, classes=classes,
                                               first_model_s=first_model_s)
    curve = _learning_curve(x_train, y_train, x_val, y_val, classes, stage1["C"])
    run.phases.finish("head")

    chosen, reason, val_probs, best, depth = _choose_stage(
        model, run, backbone=backbone, device=device, train=train, val=val, y_train=y_train, y_val=y_val,
        quick_row=row, quick_val_probs=val_probs1, quick_state=stage1_state)
    if chosen == "head" and cal:  # a quick model is calibrated out-of-fold: the set-aside images rejoin
        val, x_val, cal, x_cal = val + cal, np.concatenate([x_val, x_cal]), [], x_cal[:0]
        y_val, val_probs = _labels(val), _head_probs(head, x_val)

    # One cross-fit of the quick model over every development image: its out-of-fold scores calibrate
    # and rank suspects, and its average is the quick model's retrain (solved once, used by both).
    dev, x_dev = train + val + cal, np.concatenate([x_train, x_val, x_cal])
    dev_fit = cross_fit(x_dev, _labels(dev), len(classes), stage1["C"], config.seed, _groups(dev))
    scored = val
    if out_of_fold and dev_fit is not None:  # the cross-fitted models stand in for a validation split
        scored, y_val, val_probs, curve = _scored_out_of_fold(dev, x_dev, dev_fit, curve, classes=classes,
                                                              C=stage1["C"])
    refit = None
    if config.refit and len(val):
        refit = _measured_refit(model, chosen, run, backbone=backbone, stage1_state=stage1_state, best=best,
                                train=train, val=val, features=(x_train, x_val), test=(test, x_test),
                                C=stage1["C"], device=device, cross_fitted=dev_fit)
        reason = f"{reason} {refit['note']}"

    run.report(run.last_fraction, "calibrate", "Checking how far each answer can be trusted")
    temperature, cal_probs, y_fitted = _temperature(model, chosen, run, cal=cal, val_probs=val_probs, y_val=y_val,
                                                    prep=backbone.preprocessing, device=device)
    val_probs = apply_temperature(val_probs, temperature)
    report, trust, trust_arrays = _check_final_model(
        model, chosen, run, scored=scored, val_probs=val_probs, y_val=y_val, dev=(dev, x_dev), cross_fitted=dev_fit,
        test=(test, x_test), cal=cal, cal_probs=cal_probs, y_fitted=y_fitted, temperature=temperature, refit=refit,
        curve=curve, classes=classes, C=stage1["C"], prep=backbone.preprocessing, device=device)
    result = _result(report, trust, run, train=train, val=val, cal=cal, test=test, classes=classes, chosen=chosen,
                     reason=reason, refit=refit, depth=depth, stage1=stage1, curve=curve, device=device,
                     started=started, first_model_s=first_model_s, first_model_accuracy=row["val_accuracy"])
    save_artifact(out_dir, model, stage1_head=head, backbone=backbone, classes=classes, config=config, result=result,
                  trust_arrays=trust_arrays)
    run.report(1.0, "done", "Training finished")
    return result


# --- fit()'s steps --------------------------------------------------------------------------

def _device_and_backbone(run: _Run) -> tuple[torch.device, Backbone]:
    device = pick_device()
    # Forward passes that train nothing take as many images at once as the device likes; the training
    # batch stays config.batch_size, a setting of the recipe (it changes the model).
    run.scoring_batch = inference_batch_size(device, run.config.batch_size)
    return device, create_backbone(run.config.base, image_size=run.config.image_size)


def _quick_model(x_train, y_train, x_val, y_val, *, n_classes: int,
                 groups: list[str]) -> tuple[nn.Linear, dict, np.ndarray, dict]:
    """Stage 1, a linear head on the cached features: (the head, its fit's details (C), its
    validation probabilities, its history row)."""
    head, stage1 = fit_linear_head(x_train, y_train, n_classes, groups=groups)
    val_probs = _head_probs(head, x_val)
    row = _history_row("head", 1, _head_probs(head, x_train), y_train, val_probs, y_val)
    return head, stage1, val_probs, row


def _publish_first_model(out_dir, run, head, row, *, backbone, classes, first_model_s) -> tuple[Classifier, dict]:
    """The quick model as a whole network, written out as the interim artifact and announced; returns
    it and a copy of its weights (what a kept quick model goes back to after fine-tuning)."""
    model = Classifier(backbone, len(classes))
    model.head.load_state_dict(head.state_dict())
    stage1_state = copy.deepcopy(model.state_dict())
    interim = {"accuracy": row["val_accuracy"], "first_model_s": round(first_model_s, 2), "interim": True}
    # Written at once, so the app can predict with it while stage 2 runs; the final artifact replaces it.
    save_artifact(out_dir, model, stage1_head=head, backbone=backbone, classes=classes, config=run.config,
                  result=interim)
    run.epoch_done(row, fraction=run.head_end, message="First model ready: you can already predict with it",
                   first_model_ready=True)
    return model, stage1_state


def _choose_stage(model, run, *, backbone, device, train, val, y_train, y_val, quick_row, quick_val_probs,
                  quick_state):
    """(chosen stage, why in plain English, its validation probabilities, the best fine-tuned epoch or
    None, the fine-tuning depth or None). Preset "best" fine-tunes when validation images can show
    whether it helps, and leaves `model` holding the stage that won."""
    if run.config.preset != "best":
        return "head", "Only the quick model was trained (preset \"fast\").", quick_val_probs, None, None
    if not val:
        return "head", (f"With {smallest_class(y_train)} images in the smallest class, every image trained the quick "
                        f"model and none was held out, so nothing could show that fine-tuning would help: it was "
                        f"skipped."), quick_val_probs, None, None
    top, depth_why = choose_depth(run.config, backbone, quick_val_probs, y_val)
    best = finetune(model, backbone, train, val, y_val, run, device, top=top)
    chosen, reason = _choose(quick_row, best, run.phases.note("finetune"))
    depth = None  # said only of a fine-tuning that ran (a skipped one says why in its reason)
    if best is not None:
        depth = {"first_trained_stage": top, "stages": len(backbone.model), "why": depth_why}
    model.load_state_dict(best["state"] if chosen == "finetune" else quick_state)
    if chosen == "head":
        model.fp32_from, model.flip_tta = len(model.body), False
    return chosen, reason, best["val_probs"] if chosen == "finetune" else quick_val_probs, best, depth


def _scored_out_of_fold(dev, x_dev, dev_fit, curve, *, classes, C):
    """(images scored, their labels, their probabilities, learning curve) when the cross-fitted
    models stand in for a validation split: each image scored by a model that did not see it."""
    # The model stays the fit on every image: their average, each fitted on 4/5 of so few images,
    # scored 0.8 points lower on flowers at 20 a class (bench/small_data_bench.py).
    y_dev = _labels(dev)
    # "Will more images help?" matters most here: the curve from the same folds.
    if np.bincount(y_dev).min() >= 5:
        curve = learning_curve_out_of_fold(x_dev, y_dev, dev_fit.folds, classes, C=C)
    return dev, y_dev, dev_fit.probs, curve


def _measured_refit(model, chosen, run, *, backbone, stage1_state, best, train, val, features, test, C, device,
                    cross_fitted) -> dict:
    """_refit, plus the test images' accuracy before it (test_accuracy_before: None without test
    images, or when nothing would be retrained); `test` is (samples, cached features)."""
    test, x_test = test
    # Held-out images scored before and after the retrain: whether it paid, measured on images
    # that took part in neither (one forward pass over the test images).
    retrains = chosen == "head" or run.config.refit_finetuned  # else _refit changes nothing: no second pass
    before = _test_accuracy(model, chosen, test, x_test, backbone, device, run) if test and retrains else None
    refit = _refit(model, chosen, run, backbone=backbone, stage1_state=stage1_state, best=best, train=train, val=val,
                   features=features, C=C, device=device, cross_fitted=cross_fitted)
    refit["test_accuracy_before"] = before
    return refit


def _temperature(model, chosen, run, *, cal, val_probs, y_val, prep,
                 device) -> tuple[float, np.ndarray | None, np.ndarray]:
    """(temperature, the final model's probabilities on the set-aside images or None, the labels the
    temperature was fitted to)."""
    # A fine-tuned network's outputs (label smoothing, balanced classes) are not probabilities until
    # rescaled: one temperature serves every figure, the threshold table and predictions. It is
    # fitted, with the prediction sets, on the final model's scores of the set-aside images (or,
    # with too few validation images for that, on those that chose the epoch, and the page says so).
    cal_probs = _model_outputs(model, cal, prep, run.scoring_batch, device, run)[1] if cal else None
    fitted_on, y_fitted = (cal_probs, _labels(cal)) if cal else (val_probs, y_val)
    temperature = fit_temperature(fitted_on, y_fitted) if chosen == "finetune" and len(y_fitted) >= 2 else 1.0
    return temperature, cal_probs, y_fitted


def _check_final_model(model, chosen, run, *, scored, val_probs, y_val, dev, cross_fitted, test, cal, cal_probs,
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
    y_test = _labels(test)
    test_probs = apply_temperature(final["test_probs"], temperature) if test else None
    report = _headline_report(report, test, test_probs, y_test, classes=classes, ordered=ordered,
                              out_of_fold=scored is dev)
    if refit and test:
        refit["test_accuracy_after"] = report["accuracy"]
    eval_probs, eval_labels = (test_probs, y_test) if test else (val_probs, y_val)
    if len(classes) == 2:  # what the page's decision-threshold control trades off, image by image
        report["eval_scores"] = [[int(y), round(float(p[1]), 4)] for p, y in zip(eval_probs, eval_labels)]
    if curve:
        curve.update(verdict(curve, kept_recall={n: m["recall"] for n, m in report["per_class"].items()}))
    trust, trust_arrays = calibrate(
        dev_features=final["dev_features"], dev_labels=_labels(dev), dev_keys=[s.key for s in dev],
        oof_features=x_dev, cross_fitted=cross_fitted, C=C, n_classes=len(classes),
        finetuned=chosen == "finetune", temperature=temperature,
        val_probs=apply_temperature(cal_probs, temperature) if cal else val_probs, val_labels=y_fitted, set_aside=bool(cal),
        eval_probs=eval_probs, eval_labels=eval_labels, seed=run.config.seed, dev_groups=_groups(dev))
    run.phases.finish("final")
    return report, trust, trust_arrays


def _headline_report(val_report, test, test_probs, y_test, *, classes, ordered, out_of_fold) -> dict:
    """The test images' figures when there are any, with validation's summary beside them; else
    validation's (or the out-of-fold ones)."""
    if test:  # the headline: images that took part in nothing
        return {**M.report(test_probs, y_test, [s.key for s in test], classes, ordered=ordered),
                "evaluated_on": "test", "validation": {**_summary(val_report), "out_of_fold": out_of_fold}}
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
            "learning_curve": curve,
            "phases": run.phases.rows}


# Validation images needed before a third of them are set aside to calibrate a fine-tuned model
# (20 of 60: enough for prediction sets at alpha 0.1, which need 9, and for a temperature).
SET_ASIDE_MIN_VAL = 60
SET_ASIDE_SHARE = 1 / 3


def _set_aside_for_calibration(val, x_val, config):
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
    keys = ("accuracy", "accuracy_ci", "n_scored", "balanced_accuracy", "baseline", "per_class",
            "mean_abs_grade_error", "within_one_grade")
    return {k: report.get(k) for k in keys}


def _check_held_out(train, val, test) -> None:
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
        return {"dev_features": x_dev, "test_probs": _head_probs(head, x_test) if len(test) else None}
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
    return run.feature_seconds / run.n_embedded * (n_dev + n_test * (2 if model.flip_tta else 1))


def _test_accuracy(model, chosen, test, x_test, backbone, device, run) -> float:
    if chosen == "head":
        probs = _head_probs(copy.deepcopy(model.head).cpu(), x_test)
    else:
        probs = _model_outputs(model, test, backbone.preprocessing, run.scoring_batch, device, run)[1]
    return round(float((probs.argmax(1) == _labels(test)).mean()), 4)


def _model_outputs(model, samples, prep, batch_size, device, run, probabilities=True) -> tuple[np.ndarray, np.ndarray | None]:
    """(penultimate features, probabilities) of the model on the images, as Predictor computes them.
    No cancellation check: the model is final by now (a cancelled retrain keeps the validated one),
    and one forward pass over the images finishes the run. probabilities=False: the features only
    (of the images as they are, as Predictor's novelty check takes them), without the mirrored pass."""
    transform, feats, probs = eval_transform(prep), [], []
    model.eval().to(device=device, memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            x = _load_batch(samples[start:start + batch_size], transform, prep).to(device)
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


class _Run:
    """Progress reporting and cancellation for one fit() call."""

    def __init__(self, config, on_progress, should_stop, started):
        self.config = config
        self.on_progress, self.should_stop = on_progress, should_stop
        self.history: list[dict] = []
        self.feature_seconds, self.n_embedded = 0.0, 0
        self.last_fraction = 0.0
        # Share of the progress bar per phase: features dominate stage 1, fine-tuning dominates "best";
        # the retrain on all images runs about as long as fine-tuning did.
        self.features_end, self.head_end = (0.2, 0.25) if config.preset == "best" else (0.9, 1.0)
        self.finetune_end = 0.65 if config.refit and config.refit_finetuned and config.preset == "best" else 1.0
        self.deadline = started + config.time_budget_s
        self.phases = Phases(self.deadline)
        self.later_s = 0.0  # priced phases still to come after the running one (the retrain, during stage 2)
        self.final_s = 0.0  # the final check, run whatever the budget
        self.scoring_batch = config.batch_size  # fit() sets the device's (zoo.inference_batch_size)

    def report(self, fraction, stage, message, epoch=0, total_epochs=0, with_history=False, **extra):
        self.last_fraction = max(self.last_fraction, fraction)
        if self.on_progress:
            # Never backwards, whatever a re-planned phase computes: the bar only moves forward.
            event = {"stage": stage, "fraction": round(min(max(self.last_fraction, 0.0), 1.0), 4), "epoch": epoch,
                     "total_epochs": total_epochs, "message": message, **extra}
            if with_history:
                event["history"] = list(self.history)
            seconds_left = self.phases.seconds_left(self.later_s, self.final_s)
            if seconds_left is not None:  # the progress page's time-left comes from the phase estimates
                event["seconds_left"] = round(seconds_left, 1)
            self.on_progress(event)

    def check_stop(self):
        if self.should_stop and self.should_stop():
            raise TrainingCancelled("Training was cancelled.")

    def epoch_done(self, row, fraction, message, total_epochs=1, **extra):
        self.history.append(row)
        stage = "head" if row["stage"] == "head" else "finetune"
        self.report(fraction, stage, message, row["epoch"], total_epochs, with_history=True, **extra)

    def features(self, train, val, backbone, cache_dir, device, test=()):
        t0 = time.perf_counter()
        samples = train + val + list(test)
        counted = {"todo": 0}

        def progress(done, total):
            counted["todo"] = total
            if 0 < done < total:  # the first batches set the pace for the rest
                self.phases.estimate("features", (time.perf_counter() - t0) * total / done)
            frac = self.features_end * (done / total if total else 1.0)
            self.report(frac, "features", f"Computing image features {done}/{total}")

        self.phases.start("features", "Reading images", None)
        x = embed(samples, backbone, cache_dir=cache_dir, batch_size=self.scoring_batch,
                  progress=progress, should_stop=self.should_stop, device=device)
        self.feature_seconds, self.n_embedded = time.perf_counter() - t0, counted["todo"]
        self.n_val = len(val)
        self.phases.finish("features")
        if self.config.preset == "best" and self.n_embedded:  # a fine-tuned model re-reads every image (test: twice)
            self.final_s = self.feature_seconds / self.n_embedded * (len(samples) + len(test))
        n_dev = len(train) + len(val)
        return x[:len(train)], x[len(train):n_dev], x[n_dev:]


def _check_inputs(train, classes):
    if len(classes) < 2:
        raise ValueError("Need at least two classes to train.")
    if not train:
        raise ValueError("No training images.")
    if any(not 0 <= s.label < len(classes) for s in train):
        raise ValueError("A sample's label is outside the class list.")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _labels(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.int64)


def _groups(samples: list[Sample]) -> list[str]:
    """What folds must keep whole ("" = on its own); see sampling.py for why."""
    return [s.group for s in samples]


def _head_probs(head: nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), -1).numpy()


def _history_row(stage, epoch, train_probs, y_train, val_probs, y_val, train_loss=None) -> dict:
    return {"stage": stage, "epoch": epoch,
            "train_loss": round(M.log_loss(train_probs, y_train) if train_loss is None else train_loss, 4),
            "val_loss": _round(M.log_loss(val_probs, y_val)),
            "train_accuracy": round(float((train_probs.argmax(1) == y_train).mean()), 4),
            "val_accuracy": _round(float((val_probs.argmax(1) == y_val).mean()) if len(y_val) else None)}


def _round(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 4)


# --- stage 2: fine-tune the top blocks, or every layer ------------------------------------

# The quick model's skill on validation images, from chance (0) to perfect (1), below which the
# pretrained features are said to separate the classes poorly and "auto" depth trains every layer.
# Measured 2026-11-27 (EfficientNet-Lite0, bench/run_bench.py): flowers 0.88 and brick_crack 0.97
# (photos: the top blocks beat the reference full fine-tune there in under half its time), knee
# X-rays 0.34 (the top blocks alone stayed near the linear probe; every layer beat the full fine-tune).
POOR_SEPARATION = 0.7


def choose_depth(config: TrainConfig, backbone: Backbone, val_probs: np.ndarray, y_val: np.ndarray) -> tuple[int, str]:
    """(the first body stage stage 2 trains, why in plain English), from validation images only."""
    top = backbone.top_start(config.unfrozen_blocks)
    if config.depth == "top":
        return top, f"Fine-tuned {depth_words(top, len(backbone.model))}, as set in the advanced settings."
    if config.depth == "all":
        return 0, "Fine-tuned every layer, as set in the advanced settings."
    skill = separation_skill(val_probs, y_val)
    if skill < POOR_SEPARATION:
        return 0, (f"The pretrained features separate your classes poorly (the quick model gets {skill:.0%} of the "
                   f"way from chance to perfect on validation images), as for images far from everyday photos, "
                   f"so every layer was fine-tuned, the early, general ones more gently.")
    return top, (f"The pretrained features already separate your classes well (the quick model gets {skill:.0%} of "
                 f"the way from chance to perfect on validation images), so only {depth_words(top, len(backbone.model))} "
                 f"were fine-tuned: quicker, and as good on such images.")


def separation_skill(probs: np.ndarray, y: np.ndarray) -> float:
    """Balanced accuracy rescaled so that chance (1/K) is 0 and perfect is 1."""
    k = probs.shape[1]
    recalls = [float((probs[y == c].argmax(1) == c).mean()) for c in range(k) if (y == c).any()]
    return (float(np.mean(recalls)) - 1 / k) / (1 - 1 / k)


def depth_words(top: int, stages: int) -> str:
    """What stage 2 trained, in words: body stages are [stem, blocks..., final layer]."""
    blocks = stages - 1 - top
    if top == 0:
        return "every layer"
    if blocks == 0:
        return "the body's final layer"
    return f"the top {blocks} block{'s' if blocks > 1 else ''} and the body's final layer"


def finetune(model: Classifier, backbone: Backbone, train, val, y_val, run: _Run, device, *, top: int) -> dict | None:
    """Train body stages `top` on + head, scoring each epoch on validation; returns the best epoch
    ({state, row, val_probs, epoch_s, ...}) or None when not one epoch fitted in the time budget."""
    run.phases.start("finetune", "Fine-tuning", None)  # priced by its first batches (_Trainer.priced_epoch_fits)
    trainer = _Trainer(model, backbone, train, run=run, device=device, stage="finetune", top=top,
                       progress_span=(run.head_end, run.finetune_end))
    val_acts = _MirroredBatches(trainer.frozen, val, trainer.prep, run.scoring_batch, run)
    if top > 0:  # computed once (see _MirroredBatches)
        val_acts = list(val_acts)
    best, best_loss, stale = None, math.inf, 0
    epoch = 0
    while epoch < trainer.shown_epochs:  # the pricing may shorten the plan to what the budget allows
        epoch += 1
        stats = trainer.epoch(epoch)
        if stats is None:
            break  # time budget ran out mid-epoch (or the first epoch could not finish): keep the best finished epoch
        trainer.ema.swap()  # score (and keep) the averaged weights; swap back to keep training the raw ones
        scored_at = time.perf_counter()
        val_probs = evaluate(model, val_acts, start=trainer.top)
        if epoch == 1:  # a whole epoch and its scoring measured: the plan follows them (it may only shrink)
            trainer.plan_epochs(trainer.epoch_seconds[0] + time.perf_counter() - scored_at, run.phases.left_s(),
                                done=1, spare=1.0)
        row = _history_row("finetune", epoch, stats["probs"], stats["labels"], val_probs, y_val, stats["loss"])
        run.epoch_done(row, trainer.fraction(epoch), f"Fine-tuning epoch {epoch}/{trainer.shown_epochs}: "
                                                     f"validation accuracy {row['val_accuracy']:.0%}",
                       total_epochs=trainer.shown_epochs)
        # Patience counts epochs that improved neither validation accuracy nor loss: on a small
        # validation set accuracy plateaus long before the model stops getting better.
        improved = row["val_loss"] < best_loss
        best_loss = min(best_loss, row["val_loss"])
        if best is None or _better(row, best["row"]):
            best, improved = {"state": copy.deepcopy(model.state_dict()), "row": row, "val_probs": val_probs}, True
        stale = 0 if improved else stale + 1
        trainer.ema.swap()
        if stale >= PATIENCE or time.perf_counter() > run.deadline:
            break
    epochs_done = len(trainer.epoch_seconds)
    run.phases.finish("finetune", trainer.skip_note or (f"{epochs_done} epochs" if epochs_done else
                                                        "Fine-tuning did not finish an epoch within the time budget."),
                      skipped=bool(trainer.skip_note))
    run.later_s = 0.0  # the retrain, if it runs, is priced afresh from the epochs validation chose
    if best is not None:  # the retrain reuses the frozen stages' runner (their weights never change) and the plan
        best.update(epoch_s=trainer.mean_epoch_s, frozen=trainer.frozen, top=top, planned_epochs=trainer.shown_epochs)
    return best


def finetune_fixed(model: Classifier, backbone: Backbone, samples, epochs: int, run: _Run, *, device,
                   validated: dict) -> dict | None:
    """The `validated` run's recipe (depth, learning-rate plan, frozen runner) for a fixed number of
    epochs with no validation (the retrain on all images); returns the averaged weights, or None
    when the time budget ran out first."""
    trainer = _Trainer(model, backbone, samples, run=run, device=device, stage="refit", top=validated["top"],
                       progress_span=(run.finetune_end, 1.0), shown_epochs=epochs, frozen=validated["frozen"],
                       planned_epochs=validated["planned_epochs"])
    for epoch in range(1, epochs + 1):
        if trainer.epoch(epoch) is None:
            return None
        # Re-priced after every epoch at the pace measured now: stop as soon as it cannot finish,
        # rather than train on until the deadline and throw it all away.
        if trainer.mean_epoch_s * (epochs - epoch) > run.phases.left_s():
            return None
    trainer.ema.swap()
    return {"state": copy.deepcopy(model.state_dict())}


class _Trainer:
    """One stage-2 training of body stages `top` on: the frozen/trained split, optimiser, schedule,
    EMA and augmentation. The schedule spans the planned epochs (config.epochs, or fewer when the
    pace measured shows that no more fit in the budget); a shorter fixed-length retrain gets the same
    plan, so it follows the very learning-rate path its validated twin took up to the same epoch."""

    def __init__(self, model, backbone, samples, *, run, device, stage, top, progress_span, shown_epochs=None,
                 frozen=None, planned_epochs=None):
        config = run.config
        self.model, self.samples, self.run, self.device, self.stage = model, samples, run, device, stage
        self.top = top
        model.to(device=device, memory_format=torch.channels_last)
        groups = _freeze_body(model, top, config.layer_lr_decay)
        model.fp32_from, model.flip_tta = self.top, not config.no_mirroring
        model.mixed_trained = trains_in_mixed_precision(device)
        # fp16 gradients underflow without loss scaling; with bf16 or float32 the scaler does nothing.
        self.scaler = torch.amp.GradScaler(device.type, enabled=model.mixed_trained and precision(device) == "fp16")
        self.prep = backbone.preprocessing
        # The frozen stages only ever run forward: the fastest inference engine here runs them.
        crop = self.prep["crop"]
        self.span, self.shown_epochs = progress_span, shown_epochs or config.epochs
        self.frozen = frozen or frozen_runner(model.body[:top], device, (3, crop, crop), len(samples) * self.shown_epochs)
        self.steps_per_epoch = math.ceil(len(samples) / config.batch_size)
        self.opt, self.sched = _optimizer(groups, config, (planned_epochs or config.epochs) * self.steps_per_epoch)
        labels = _labels(samples)
        self.weights = torch.as_tensor(class_weights(labels, model.head.out_features), dtype=torch.float32).to(device)
        self.transform = train_transform(self.prep, config.augmentation, mirror=not config.no_mirroring)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.ema = _Ema([p for g in groups for p in g["params"]])
        self.epoch_seconds: list[float] = []
        self.skip_note = ""  # set when the pricing showed that not one epoch fits in the budget

    def priced_epoch_fits(self, batch_s: float, batches_done: int) -> bool:
        """A batch prices the epoch, plans how many fit, and prices the phase (every epoch at that
        pace); fine-tuning whose first epoch cannot finish in the time left stops here, a batch or
        two in, not at the deadline."""
        epoch_s = batch_s * self.steps_per_epoch
        still_to_run_s = batch_s * (self.steps_per_epoch - batches_done)
        if self.stage == "finetune" and still_to_run_s > self.run.phases.left_s():
            self.skip_note = (f"Fine-tuning skipped: one epoch would need ~{epoch_s:.0f} s, "
                              f"{self.run.phases.left_s() + epoch_s - still_to_run_s:.0f} s were left in the time budget.")
            self.run.phases.estimate(self.stage, epoch_s * self.shown_epochs)
            return False
        if self.stage == "finetune":
            self.plan_epochs(epoch_s, self.run.phases.left_s() + epoch_s - still_to_run_s, done=0)
        self.run.phases.estimate(self.stage, epoch_s * self.shown_epochs)
        return True

    def plan_epochs(self, epoch_s: float, left_s: float, done: int, spare: float = 1.1) -> None:
        """As many epochs as fit in the budget, at most config.epochs: the learning rate then decays to
        its end inside the budget instead of being cut off at its height. Planned from a batch's pace
        (10% spare for scoring validation images), then again from the first whole epoch with its
        scoring. A plan only ever shrinks: growing it once the decay has begun would raise the
        learning rate again, and move the progress bar back."""
        config = self.run.config
        n_all = len(self.samples) + self.run.n_val
        retrain = config.refit and config.refit_finetuned  # it runs as many epochs again, on every image
        cost = spare * epoch_s * (1 + n_all / len(self.samples) if retrain else 1)
        self.shown_epochs = max(1, min(self.shown_epochs, done + int(left_s / cost)))
        self.sched.plan(self.shown_epochs * self.steps_per_epoch)
        if retrain:
            self.run.later_s = retrain_estimate_s(epoch_s, len(self.samples), n_all, self.shown_epochs)

    @property
    def mean_epoch_s(self) -> float:
        return sum(self.epoch_seconds) / max(1, len(self.epoch_seconds))

    def fraction(self, epochs_done: float) -> float:
        lo, hi = self.span
        return lo + (hi - lo) * min(1.0, epochs_done / self.shown_epochs)

    def message(self, epoch: int) -> str:
        if self.stage == "refit":
            return f"Retraining on all {len(self.samples)} images: epoch {epoch}/{self.shown_epochs}"
        return f"Fine-tuning epoch {epoch}/{self.shown_epochs}"

    def epoch(self, epoch: int) -> dict | None:
        """One epoch in a fresh random order; None when the time budget ran out (or the pricing
        showed that not one epoch fits)."""
        t0 = time.perf_counter()
        order = torch.randperm(len(self.samples), generator=self.generator).tolist()
        loader = _FrozenBatches(self, [self.samples[i] for i in order])
        _regularise(self.model, self.top, True)
        try:
            stats = train_one_epoch(self.model, self.opt, loader, start=self.top, scheduler=self.sched,
                                    scaler=self.scaler, ema=self.ema,
                                    class_weights=self.weights, on_batch=lambda seen, batch_s: self.batch_done(
                                        epoch, seen, batch_s))
        finally:
            _regularise(self.model, self.top, False)
        if stats is None or loader.out_of_time:
            return None
        self.epoch_seconds.append(time.perf_counter() - t0)
        return stats

    def batch_done(self, epoch: int, seen: int, batch_s: float) -> bool:
        """Progress after each batch; the first epoch's second batch (its only one, in a one-batch
        epoch) also prices the phase (False: stop). Not the very first: it also pays one-off costs
        (kernel selection, memory), and it overpriced fine-tuning every layer five-fold."""
        size = self.run.config.batch_size
        prices = epoch == 1 and (size < seen <= 2 * size or size >= len(self.samples))
        if prices and not self.priced_epoch_fits(batch_s, batches_done=math.ceil(seen / size)):
            return False
        done = epoch - 1 + seen / len(self.samples)
        self.run.report(self.fraction(done), self.stage, self.message(epoch), epoch, self.shown_epochs)
        return True


class _FrozenBatches:
    """The training loader: (frozen body activations, labels) per batch of augmented images. The
    frozen stages are part of the input pipeline here: they never train, so they run without
    gradients in the fastest engine available. Stops early, setting out_of_time, at the deadline."""

    def __init__(self, trainer: "_Trainer", samples: list[Sample]):
        self.t, self.samples, self.out_of_time = trainer, samples, False

    def __iter__(self):
        t, bs = self.t, self.t.run.config.batch_size
        for start in range(0, len(self.samples), bs):
            t.run.check_stop()
            if time.perf_counter() > t.run.deadline:
                self.out_of_time = True
                return
            batch = self.samples[start:start + bs]
            with torch.no_grad():
                acts = _activations(t.frozen, _load_batch(batch, t.transform, t.prep)).to(t.device)
            yield acts, torch.tensor([s.label for s in batch], device=t.device)


def _optimizer(groups: list[dict], config: TrainConfig, total_steps: int):
    """AdamW on the parameter groups (each with its own learning rate), with a short warm-up then
    cosine decay to zero over `total_steps`."""
    for g in groups:
        g["lr"] = config.lr * g.pop("lr_scale")
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.05)
    return opt, _WarmupCosine(opt, total_steps)


class _WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Each group's learning rate rises from 1/25 of its peak over the first 15% of the steps, then
    follows a cosine to zero at the last. `plan` sets the schedule's length once the measured pace has shown
    how many epochs fit in the budget."""

    WARMUP, START = 0.15, 1 / 25

    def __init__(self, optimizer, total_steps: int):
        self.total_steps = max(1, total_steps)
        super().__init__(optimizer, self._factor)

    def plan(self, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)

    def _factor(self, step: int) -> float:
        warmup = max(1, int(self.WARMUP * self.total_steps))
        if step < warmup:
            return self.START + (1 - self.START) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))


class _Ema:
    """Exponential moving average of the trained weights. With a validation set of a hundred
    images, single epochs swing by several points; the average is steadier and generalises better."""

    def __init__(self, params: list[nn.Parameter], decay: float = 0.9):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def _regularise(model: Classifier, top: int, active: bool) -> None:
    """Stochastic depth (in the trained stages) and head dropout: on while training, off for scoring."""
    for stage in model.body[top:]:
        for m in stage.modules():
            if type(m).__name__ == "DropPath":
                m.train(active)
    model.dropout.train(active)


def _freeze_body(model: Classifier, top: int, layer_lr_decay: float) -> list[dict]:
    """Freeze body stages before `top`; the optimiser groups for the rest, each stage's learning rate
    `layer_lr_decay` times the one above it (discriminative learning rates: the early layers hold
    the most general features), the head's as the last stage's. The scales average 1 over the
    trained stages, so config.lr stays the mean rate whatever the depth: decay redistributes it
    (every layer of EfficientNet-Lite0: the top stage at 1.76 lr, the stem at 0.48 lr)."""
    # BatchNorm stays in eval mode everywhere: batches of a few dozen images would wreck its statistics.
    model.eval()
    last = len(model.body) - 1
    trained = range(top, last + 1)
    mean = sum(layer_lr_decay ** (last - i) for i in trained) / len(trained)
    groups = [{"params": list(model.head.parameters()), "lr_scale": 1 / mean}]
    for i, stage in enumerate(model.body):
        for p in stage.parameters():
            p.requires_grad_(i >= top)
        if i >= top:
            groups.append({"params": list(stage.parameters()), "lr_scale": layer_lr_decay ** (last - i) / mean})
    return groups


def _load_batch(samples, transform, prep) -> torch.Tensor:
    return torch.stack([transform(load_rgb(s.path)) for s in samples])


class _MirroredBatches:
    """evaluate()'s loader: the frozen body's output for the validation images and their mirrors,
    batch by batch. finetune() keeps them in memory (`list(...)`) when stages are frozen, computed
    once; with nothing frozen they would be the images themselves (1.2 MB each, with their mirrors),
    so they are read again at each pass."""

    def __init__(self, frozen, samples, prep, batch_size, run):
        self.frozen, self.samples, self.prep, self.batch_size, self.run = frozen, samples, prep, batch_size, run

    def __iter__(self):
        transform = eval_transform(self.prep)
        with torch.inference_mode():
            for start in range(0, len(self.samples), self.batch_size):
                self.run.check_stop()
                x = _load_batch(self.samples[start:start + self.batch_size], transform, self.prep)
                yield _activations(self.frozen, x), _activations(self.frozen, torch.flip(x, dims=[3]))


def _activations(frozen, x) -> torch.Tensor:
    return frozen(x).contiguous(memory_format=torch.channels_last)


def evaluate(model, loader, *, start=0) -> np.ndarray:
    """Probabilities for `loader`'s (activations, mirrored activations) batches, the model run from
    body stage `start` on (validation's frozen activations are computed once): the same numbers
    Classifier.predict_proba gives on the images."""
    with torch.inference_mode():
        probs = []
        for a, a_flip in loader:
            p = torch.softmax(model(a, start=start), -1)
            if model.flip_tta:
                p = (p + torch.softmax(model(a_flip, start=start), -1)) / 2
            probs.append(p.cpu())
        return torch.cat(probs).numpy()


def train_one_epoch(model, optimizer, loader, *, start, scheduler, scaler, ema, class_weights, on_batch) -> dict | None:
    """One pass over `loader` ((activations, labels) batches) training the model from body stage
    `start` on, with label smoothing and class-balanced weights; the scheduler steps per batch and
    the EMA follows. on_batch(images seen, seconds this batch took) returning False stops the epoch
    (None)."""
    losses, probs, labels, seen = [], [], [], 0
    batch_t0 = time.perf_counter()
    for acts, y in loader:
        logits = model(acts, start=start)
        loss = F.cross_entropy(logits, y, weight=class_weights, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # a disabled scaler (CPU, bf16) passes straight through
        scaler.step(optimizer)
        scaler.update()
        ema.update()
        if scheduler.last_epoch + 1 < scheduler.total_steps:
            scheduler.step()
        losses.append(loss.item() * len(y))
        probs.append(torch.softmax(logits.detach().float(), -1).cpu())
        labels.append(y.cpu())
        seen += len(y)
        if not on_batch(seen, time.perf_counter() - batch_t0):
            return None
        batch_t0 = time.perf_counter()
    if not seen:
        return None
    return {"loss": sum(losses) / seen, "probs": torch.cat(probs).numpy(), "labels": torch.cat(labels).numpy()}


def _better(row: dict, other: dict) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    return (row["val_accuracy"], -row["val_loss"]) > (other["val_accuracy"], -other["val_loss"])


def _choose(stage1_row: dict, best: dict | None, skip_note: str = "") -> tuple[str, str]:
    """Which stage becomes the artifact, and why in plain English."""
    if best is None:
        return "head", f"{skip_note or 'Fine-tuning did not finish an epoch within the time budget.'} The quick model was kept."
    r, q = best["row"], stage1_row
    if _better(r, q):
        return "finetune", (f"Fine-tuning reached {r['val_accuracy']:.1%} validation accuracy (quick model: "
                            f"{q['val_accuracy']:.1%}), so the fine-tuned model was kept.")
    return "head", (f"The quick model ({q['val_accuracy']:.1%} validation accuracy) was at least as good as "
                    f"fine-tuning ({r['val_accuracy']:.1%}), so the quick model was kept.")


def _strategy(chosen: str, stage1: dict, config: TrainConfig, history: list[dict], refit: dict | None,
              depth: dict | None) -> str:
    if chosen == "head":
        text = f"linear head on cached {config.base} features (C={stage1['C']})"
    else:
        epochs = sum(1 for h in history if h["stage"] == "finetune")
        trained = depth_words(depth["first_trained_stage"], depth["stages"])
        text = (f"linear head (C={stage1['C']}) then fine-tuned {trained} "
                f"for {epochs} epoch{'s' if epochs != 1 else ''} ({config.augmentation} augmentation)")
    if refit and refit["done"]:
        text += f", then retrained on all {refit['n_images']} images" + (
            f" for {refit['epochs']} epochs" if refit["epochs"] else "")
    return text


# --- retrain the chosen recipe on every image -----------------------------------------------

def _refit(model, chosen, run, *, backbone, stage1_state, best, train, val, features, C, device, cross_fitted=None) -> dict:
    """Validation has chosen the stage and, for stage 2, the epoch; train that recipe again on
    training + validation images (25 % more data at the default split). Keeps the validated model
    when the retrain would not fit in the time budget. A quick model's retrain is `cross_fitted`'s
    average: the cross-fit of these same images whose out-of-fold scores calibrate it."""
    t0 = time.perf_counter()
    samples = train + val
    x, y = np.concatenate(features), _labels(samples)
    info = {"done": False, "n_images": len(samples), "epochs": 0, "seconds": 0.0}
    if chosen == "head":
        fitted = cross_fitted
        if fitted is None:
            model.head.load_state_dict(fit_linear_head(x, y, model.head.out_features, C=C)[0].state_dict())
            return _refit_done(info, t0, "")
        model.head.load_state_dict(fitted.head.state_dict())
        k = int(fitted.folds.max()) + 1
        return _refit_done(info, t0, f", as the average of {k} models that each left 1/{k} of them out (their "
                                     f"scores on the images they left out calibrate its answers)")
    if not run.config.refit_finetuned:
        return {**info, "note": "The fine-tuned model was not retrained on all images: that would take about as long "
                                "as fine-tuning did, and it did not pay on held-out images (the advanced settings can "
                                "turn it on)."}
    head, _ = fit_linear_head(x, y, model.head.out_features, C=C)
    model.load_state_dict(stage1_state)
    model.head.load_state_dict(head.state_dict())
    return _refit_finetuned(model, run, backbone=backbone, best=best, samples=samples, n_train=len(train), info=info,
                            device=device, started=t0)


def _refit_finetuned(model, run, *, backbone, best, samples, n_train, info, device, started) -> dict:
    """Fine-tune again, from the quick model refitted on every image, for the epochs validation chose."""
    epochs = best["row"]["epoch"]
    if not run.phases.start("refit", "Retraining on all images",
                            retrain_estimate_s(best["epoch_s"], n_train, len(samples), epochs)):
        model.load_state_dict(best["state"])
        return {**info, "note": run.phases.note("refit") + " The validated model was kept."}
    try:
        refitted = finetune_fixed(model, backbone, samples, epochs, run, device=device, validated=best)
    except TrainingCancelled:  # the model is already chosen and validated: stop, but do not lose it
        refitted, why = None, "The retrain on all images was cancelled, so the validated model was kept."
    else:
        why = ("The retrain on all images would not have finished in the time budget at the pace it ran, so it "
               "was stopped and the validated model was kept.")
    run.phases.finish("refit", "" if refitted else why, skipped=refitted is None)
    if refitted is None:
        model.load_state_dict(best["state"])
        return {**info, "note": why}
    model.load_state_dict(refitted["state"])
    return _refit_done({**info, "epochs": epochs}, started, f" for the same {epochs} epochs")


def _refit_done(info: dict, t0: float, how: str) -> dict:
    n = info["n_images"]
    return {**info, "done": True, "seconds": round(time.perf_counter() - t0, 2),
            "note": (f"It was then retrained on all {n} images (training + validation){how}, so it learns from "
                     f"every labelled image; the validation figures are from before that retrain.")}


# --- artifact -------------------------------------------------------------------------------

def save_artifact(out_dir: Path, model: Classifier, *, stage1_head: nn.Linear, backbone: Backbone,
                  classes: list[str], config: TrainConfig, result: dict, trust_arrays: dict | None = None) -> None:
    """model.pt (full state dict) + meta.json: enough to predict without the database."""
    import timm
    import torchvision
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: the web process may be loading the previous (stage-1) model.
    # CPU copies, without moving the model itself (fit() may still be using it on the GPU).
    _save_atomically({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    # The stage-1 head alone (a few KB): lets bench score the first model on a held-out test set.
    torch.save(stage1_head.state_dict(), out / "stage1_head.pt")
    if trust_arrays:  # what predict needs for prediction sets and the novelty check, without the DB
        np.savez(out / "trust.npz.tmp.npz", **trust_arrays)
        (out / "trust.npz.tmp.npz").replace(out / "trust.npz")
    meta = {"format": 1, "classes": list(classes), "base": config.base, "feature_dim": backbone.feature_dim,
            "fp32_from": model.fp32_from, "flip_tta": model.flip_tta,
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
