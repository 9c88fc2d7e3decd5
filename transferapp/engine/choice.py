"""Which model is kept: the quick model or the fine-tuned one, and whether it is refit on every image."""
from __future__ import annotations

import copy
import time

import numpy as np

from . import depth as engine_depth
from . import final, state
from . import finetune as engine_finetune
from .curve import learning_curve_out_of_fold
from .data import smallest_class
from .features import TrainingCancelled
from .calibrate import fit_temperature
from .head import fit_linear_head
from .paired import in_words, paired_difference
from .zoo import Averaged, average_probabilities
from .phases import retrain_estimate_s


def choose_stage(model, run, *, backbone, device, train, val, y_train, y_val, quick_row, quick_val_probs,
                  quick_state):
    """(chosen stage, why in plain English, its validation probabilities, the best fine-tuned epoch or
    None, the fine-tuning depth or None, the model kept). Preset "best" fine-tunes when validation
    images can show whether it helps; the model kept is `model` holding the stage that won, or, for
    "ensemble", the fine-tuned and the quick model averaged (zoo.Averaged)."""
    if run.config.preset != "best":
        return "head", "Only the quick model was trained (preset \"fast\").", quick_val_probs, None, None, model
    if not val:
        return "head", (f"With {smallest_class(y_train)} images in the smallest class, every image trained the quick "
                        f"model and none was held out, so nothing could show that fine-tuning would help: it was "
                        f"skipped."), quick_val_probs, None, None, model
    top, depth_why = engine_depth.choose_depth(run.config, backbone, quick_val_probs, y_val, train)
    best = engine_finetune.finetune(model, backbone, train, val, y_val, run, device, top=top,
                                   quick_val_probs=quick_val_probs)
    candidates = _candidates(quick_val_probs, best, y_val)
    chosen, reason = _choose(quick_row, best, run.phases.note("finetune"), candidates, y_val)
    if best is not None and best.get("stopped_why"):
        reason = f"{best['stopped_why']} {reason}"
    depth = None  # said only of a fine-tuning that ran (a skipped one says why in its reason)
    if best is not None:
        depth = {"first_trained_stage": top, "stages": len(backbone.model), "why": depth_why}
        run.stage_choice = stage_choice(candidates, y_val, chosen)
    quick = _quick_member(model, quick_state) if chosen == "ensemble" else None
    model.load_state_dict(quick_state if chosen == "head" else best["state"])
    if chosen == "head":
        model.fp32_from, model.flip_tta = len(model.body), False
        return chosen, reason, quick_val_probs, best, depth, model
    if chosen == "ensemble":
        kept = Averaged(model, quick, candidates["temperatures"])
        return chosen, reason, candidates["ensemble"], best, depth, kept
    return chosen, reason, best["val_probs"], best, depth, model


def _quick_member(model, quick_state):
    """The quick model as a network of its own (a copy of the pretrained body + its head), to sit beside the
    fine-tuned one in an ensemble."""
    quick = copy.deepcopy(model)
    quick.load_state_dict(quick_state)
    quick.fp32_from, quick.flip_tta, quick.mixed_trained = len(quick.body), False, False
    return quick


def _candidates(quick_val_probs, best, y_val) -> dict | None:
    """The three models a choice is made between, as validation probabilities: the quick model, the
    fine-tuned one and their average, each member first rescaled by a temperature fitted on these
    images (a fine-tuned network trained with label smoothing is underconfident: unscaled, the quick
    model would outvote it wherever they disagree). None when fine-tuning finished no epoch."""
    if best is None:
        return None
    temperatures = (fit_temperature(best["val_probs"], y_val), fit_temperature(quick_val_probs, y_val))
    return {"head": quick_val_probs, "finetune": best["val_probs"], "temperatures": temperatures,
            "ensemble": average_probabilities(best["val_probs"], quick_val_probs, temperatures)}


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
    retrains = chosen != "finetune" or run.config.refit_finetuned  # else _refit changes nothing: no second pass
    before = final.test_accuracy(model, chosen, test, x_test, backbone, device, run) if test and retrains else None
    refit = _refit(model, chosen, run, backbone=backbone, stage1_state=stage1_state, best=best, train=train, val=val,
                   features=features, C=C, device=device, cross_fitted=cross_fitted)
    refit["test_accuracy_before"] = before
    return refit


NAMES = {"head": "the quick model", "finetune": "the fine-tuned model", "ensemble": "the average of the two"}


def _choose(stage1_row: dict, best: dict | None, skip_note: str = "", candidates: dict | None = None,
            y_val=None) -> tuple[str, str]:
    """Which model becomes the artifact ("head", "finetune" or "ensemble"), and why in plain English.

    Never discard, combine: the average of the quick and the fine-tuned model is kept unless one of them
    alone is clearly better on the validation images both scored (paired.paired_difference: an
    interval of the accuracy difference that excludes 0). The fine-tuned model alone replaces the
    average when it is clearly better; the quick model replaces either only when clearly better
    than it. A lead of an image or two is noise and flips nothing: the prior is on the side that keeps
    the fine-tuning, which helps most where images are least like ImageNet's."""
    if best is None:
        return "head", f"{skip_note or 'Fine-tuning did not finish an epoch within the time budget.'} The quick model was kept."
    correct = {name: candidates[name].argmax(1) == y_val for name in NAMES}
    accuracy = {name: float(c.mean()) for name, c in correct.items()}
    kept = "ensemble"
    fine_vs_average = paired_difference(correct["finetune"], correct["ensemble"])
    if fine_vs_average["clear"] and fine_vs_average["difference"] > 0:
        kept = "finetune"
    quick_vs_kept = paired_difference(correct["head"], correct[kept])
    if quick_vs_kept["clear"] and quick_vs_kept["difference"] > 0:
        kept = "head"
    if kept == "head":
        why = "the quick model alone was clearly better, so the fine-tuning was not used"
    elif kept == "finetune":
        why = ("the fine-tuned model alone was clearly better than the average, and the quick model was not clearly "
               "better than it (a lead of an image or two on this many images is noise)")
    else:
        why = ("neither model alone was clearly better than their average (a lead of an image or two on this many "
               "images is noise), so it keeps what both learned")
    others = [name for name in NAMES if name != kept]
    evidence = " ".join(_sentence(in_words(NAMES[kept], NAMES[o], paired_difference(correct[kept], correct[o])))
                        for o in others)
    right = {name: int(c.sum()) for name, c in correct.items()}
    n = len(y_val)
    # k/n, never a bare percentage: these images can be fewer than the headline's (a third of them is
    # set aside to calibrate a fine-tuned model), so "92.6%" would read as another figure for the same thing.
    scores = (f"On the {n} validation images that chose the stage, the quick model got {right['head']}/{n} right "
              f"({accuracy['head']:.0%}), the fine-tuned model {right['finetune']}/{n} ({accuracy['finetune']:.0%}) "
              f"and their average {right['ensemble']}/{n} ({accuracy['ensemble']:.0%}).")
    return kept, f"{scores} {_capital(NAMES[kept])} was kept: {why}. {evidence}"


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def _sentence(text: str) -> str:
    return _capital(text) + "."


def stage_choice(candidates: dict, y_val, kept: str) -> dict:
    """The figures behind the choice, for the metrics: each candidate's validation accuracy, and the
    kept model against each other one (difference, interval, images only one got right)."""
    correct = {name: candidates[name].argmax(1) == y_val for name in NAMES}
    return {"kept": kept, "n": int(len(y_val)), "temperatures": list(candidates["temperatures"]),
            "accuracy": {name: round(float(c.mean()), 4) for name, c in correct.items()},
            "kept_against": {name: paired_difference(correct[kept], c) for name, c in correct.items() if name != kept}}


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
    if chosen in ("head", "ensemble"):  # an ensemble's quick half is retrained as a kept quick model is
        quick = model if chosen == "head" else model.quick
        fitted = cross_fitted
        if fitted is None:
            quick.head.load_state_dict(fit_linear_head(x, y, quick.head.out_features, C=C)[0].state_dict())
            return _refit_done(info, t0, "", chosen)
        quick.head.load_state_dict(fitted.head.state_dict())
        k = int(fitted.folds.max()) + 1
        return _refit_done(info, t0, f", as the average of {k} models that each left 1/{k} of them out (their "
                                     f"scores on the images they left out calibrate its answers)", chosen)
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


def _refit_done(info: dict, t0: float, how: str, chosen: str = "head") -> dict:
    n = info["n_images"]
    what = "Its quick half was" if chosen == "ensemble" else "It was"
    after = (" (the fine-tuned half was not: that would take about as long as fine-tuning did)"
             if chosen == "ensemble" else "")
    return {**info, "done": True, "seconds": round(time.perf_counter() - t0, 2),
            "note": (f"{what} then retrained on all {n} images (training + validation){how}{after}, so it learns "
                     f"from every labelled image; the validation figures are from before that retrain.")}
