"""Which model is kept: the quick model or the fine-tuned one, and whether it is refit on every image."""
from __future__ import annotations

import time

import numpy as np

from . import depth as engine_depth
from . import final, state
from . import finetune as engine_finetune
from .curve import learning_curve_out_of_fold
from .data import smallest_class
from .features import TrainingCancelled
from .head import fit_linear_head
from .phases import retrain_estimate_s


def choose_stage(model, run, *, backbone, device, train, val, y_train, y_val, quick_row, quick_val_probs,
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
    top, depth_why = engine_depth.choose_depth(run.config, backbone, quick_val_probs, y_val)
    best = engine_finetune.finetune(model, backbone, train, val, y_val, run, device, top=top)
    chosen, reason = _choose(quick_row, best, run.phases.note("finetune"))
    depth = None  # said only of a fine-tuning that ran (a skipped one says why in its reason)
    if best is not None:
        depth = {"first_trained_stage": top, "stages": len(backbone.model), "why": depth_why}
    model.load_state_dict(best["state"] if chosen == "finetune" else quick_state)
    if chosen == "head":
        model.fp32_from, model.flip_tta = len(model.body), False
    return chosen, reason, best["val_probs"] if chosen == "finetune" else quick_val_probs, best, depth


def scored_out_of_fold(dev, x_dev, dev_fit, curve, *, classes, C):
    """(images scored, their labels, their probabilities, learning curve) when the cross-fitted
    models stand in for a validation split: each image scored by a model that did not see it."""
    # The model stays the fit on every image: their average, each fitted on 4/5 of so few images,
    # scored 0.8 points lower on flowers at 20 a class (bench/small_data_bench.py).
    y_dev = state.labels(dev)
    # "Will more images help?" matters most here: the curve from the same folds.
    if np.bincount(y_dev).min() >= 5:
        curve = learning_curve_out_of_fold(x_dev, y_dev, dev_fit.folds, classes, C=C)
    return dev, y_dev, dev_fit.probs, curve


def measured_refit(model, chosen, run, *, backbone, stage1_state, best, train, val, features, test, C, device,
                    cross_fitted) -> dict:
    """_refit, plus the test images' accuracy before it (test_accuracy_before: None without test
    images, or when nothing would be retrained); `test` is (samples, cached features)."""
    test, x_test = test
    # Held-out images scored before and after the retrain: whether it paid, measured on images
    # that took part in neither (one forward pass over the test images).
    retrains = chosen == "head" or run.config.refit_finetuned  # else _refit changes nothing: no second pass
    before = final.test_accuracy(model, chosen, test, x_test, backbone, device, run) if test and retrains else None
    refit = _refit(model, chosen, run, backbone=backbone, stage1_state=stage1_state, best=best, train=train, val=val,
                   features=features, C=C, device=device, cross_fitted=cross_fitted)
    refit["test_accuracy_before"] = before
    return refit


def _choose(stage1_row: dict, best: dict | None, skip_note: str = "") -> tuple[str, str]:
    """Which stage becomes the artifact, and why in plain English."""
    if best is None:
        return "head", f"{skip_note or 'Fine-tuning did not finish an epoch within the time budget.'} The quick model was kept."
    r, q = best["row"], stage1_row
    if state.better(r, q):
        return "finetune", (f"Fine-tuning reached {_val_figure(r, where=True)} (quick model: {_val_figure(q)}), so the "
                            f"fine-tuned model was kept.")
    return "head", (f"The quick model ({_val_figure(q, where=True)}) was at least as good as fine-tuning "
                    f"({_val_figure(r)}), so the quick model was kept.")


def _val_figure(row: dict, where: bool = False) -> str:
    """A history row's validation accuracy with the images it counts ("50/54 right (93%) on the
    validation images that chose the stage"): the choosing images can be fewer than the headline's (a
    third of them is set aside to calibrate a fine-tuned model), so a bare percentage reads as another
    figure for the same thing."""
    if row.get("val_correct") is None:  # a row from before k and n were kept
        return f"{row['val_accuracy']:.1%} validation accuracy"
    k, n = row["val_correct"], row["n_val"]
    return f"{k}/{n} right ({k / n:.0%})" + (" on the validation images that chose the stage" if where else "")


# --- retrain the chosen recipe on every image -----------------------------------------------

def _refit(model, chosen, run, *, backbone, stage1_state, best, train, val, features, C, device, cross_fitted=None) -> dict:
    """Validation has chosen the stage and, for stage 2, the epoch; train that recipe again on
    training + validation images (25 % more data at the default split). Keeps the validated model
    when the retrain would not fit in the time budget. A quick model's retrain is `cross_fitted`'s
    average: the cross-fit of these same images whose out-of-fold scores calibrate it."""
    t0 = time.perf_counter()
    samples = train + val
    x, y = np.concatenate(features), state.labels(samples)
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
        refitted = engine_finetune.finetune_fixed(model, backbone, samples, epochs, run, device=device, validated=best)
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
