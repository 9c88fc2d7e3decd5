"""fit(): the whole training of one model, phase by phase (features, quick model, fine-tuning,
the choice between them, the final check), as torchvision's references/classification train.py.
"""
from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import choice, final, state
from .calibrate import apply_temperature
from .config import TrainConfig
from .data import Sample
from .features import pick_device
from .head import cross_fit, fit_linear_head
from .ordinal import in_grade_order
from .zoo import Backbone, Classifier, create_backbone, inference_batch_size


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
    final.check_held_out(train, val, test)
    _seed_everything(config.seed)
    run = state._Run(config, on_progress, should_stop, started)
    device, backbone = _device_and_backbone(run)
    x_train, x_val, x_test = run.features(train, val, backbone, cache_dir, device, test)
    val, x_val, cal, x_cal = final.set_aside_for_calibration(val, x_val, config)
    y_train, y_val = state.labels(train), state.labels(val)
    out_of_fold = not val

    run.phases.start("head", "Quick model", None)
    head, stage1, val_probs1, row = _quick_model(x_train, y_train, x_val, y_val, n_classes=len(classes),
                                                 groups=state.groups(train))
    first_model_s = time.perf_counter() - started
    model, stage1_state = _publish_first_model(out_dir, run, head, row, backbone=backbone, classes=classes,
                                               first_model_s=first_model_s, train=train)
    curve = final._learning_curve(x_train, y_train, x_val, y_val, classes, stage1["C"])
    run.phases.finish("head")

    chosen, reason, val_probs, best, depth, model = choice.choose_stage(
        model, run, backbone=backbone, device=device, train=train, val=val, y_train=y_train, y_val=y_val,
        quick_row=row, quick_val_probs=val_probs1, quick_state=stage1_state)
    if chosen == "head" and cal:  # a quick model is calibrated out-of-fold: the set-aside images rejoin
        val, x_val, cal, x_cal = val + cal, np.concatenate([x_val, x_cal]), [], x_cal[:0]
        y_val, val_probs = state.labels(val), state.head_probs(head, x_val)

    # One cross-fit of the quick model over every development image: its out-of-fold scores calibrate
    # and rank suspects, and its average is the quick model's retrain (solved once, used by both).
    dev, x_dev = train + val + cal, np.concatenate([x_train, x_val, x_cal])
    dev_fit = cross_fit(x_dev, state.labels(dev), len(classes), stage1["C"], config.seed, state.groups(dev))
    scored = val
    if out_of_fold and dev_fit is not None:  # the cross-fitted models stand in for a validation split
        scored, y_val, val_probs, curve = choice.scored_out_of_fold(dev, x_dev, dev_fit, curve, classes=classes,
                                                              C=stage1["C"])
    refit = None
    if config.refit and len(val):
        refit = choice.measured_refit(model, chosen, run, backbone=backbone, stage1_state=stage1_state, best=best,
                                train=train, val=val, features=(x_train, x_val), test=(test, x_test),
                                C=stage1["C"], device=device, cross_fitted=dev_fit)
        reason = f"{reason} {refit['note']}"

    run.report(run.last_fraction, "calibrate", "Checking how far each answer can be trusted")
    temperature, cal_probs, y_fitted = final._temperature(model, chosen, run, cal=cal, val_probs=val_probs, y_val=y_val,
                                                    prep=backbone.preprocessing, device=device)
    val_probs = apply_temperature(val_probs, temperature)
    report, trust, trust_arrays = final.check_final_model(
        model, chosen, run, scored=scored, val_probs=val_probs, y_val=y_val, dev=(dev, x_dev), cross_fitted=dev_fit,
        test=(test, x_test), cal=cal, cal_probs=cal_probs, y_fitted=y_fitted, temperature=temperature, refit=refit,
        curve=curve, classes=classes, C=stage1["C"], prep=backbone.preprocessing, device=device)
    result = final._result(report, trust, run, train=train, val=val, cal=cal, test=test, classes=classes, chosen=chosen,
                     reason=reason, refit=refit, depth=depth, stage1=stage1, curve=curve, device=device,
                     started=started, first_model_s=first_model_s, first_model_accuracy=row["val_accuracy"])
    final.save_artifact(out_dir, model, stage1_head=head, backbone=backbone, classes=classes, config=config, result=result,
                  trust_arrays=trust_arrays, trained_on=final.trained_on(train, val, refit))
    run.report(1.0, "done", "Training finished")
    return result


# --- fit()'s steps --------------------------------------------------------------------------

def _device_and_backbone(run: state._Run) -> tuple[torch.device, Backbone]:
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
    val_probs = state.head_probs(head, x_val)
    row = state.history_row("head", 1, state.head_probs(head, x_train), y_train, val_probs, y_val)
    return head, stage1, val_probs, row


def _publish_first_model(out_dir, run, head, row, *, backbone, classes, first_model_s,
                         train) -> tuple[Classifier, dict]:
    """The quick model as a whole network, written out as the interim artifact and announced; returns
    it and a copy of its weights (what a kept quick model goes back to after fine-tuning)."""
    model = Classifier(backbone, len(classes))
    model.head.load_state_dict(head.state_dict())
    stage1_state = copy.deepcopy(model.state_dict())
    interim = {"accuracy": row["val_accuracy"], "first_model_s": round(first_model_s, 2), "interim": True}
    # Written at once, so the app can predict with it while stage 2 runs; the final artifact replaces it.
    final.save_artifact(out_dir, model, stage1_head=head, backbone=backbone, classes=classes, config=run.config,
                  result=interim, trained_on=train)
    run.epoch_done(row, fraction=run.head_end, message="First model ready: you can already predict with it",
                   first_model_ready=True)
    return model, stage1_state


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
