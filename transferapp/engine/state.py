"""One training's state shared by its phases (_Run) and the small helpers they all read."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from . import metrics as M
from .data import Sample
from .features import TrainingCancelled, embed
from .phases import Phases


# Share of the progress bar for a features phase that found every image in the cache.
CACHED_FEATURES_SHARE = 0.02


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
        self.stage_choice = None  # choice.stage_choice: the figures behind the model kept, once fine-tuning ran

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

    def _all_cached(self, n_images: int) -> None:
        """The features phase costs nothing: it gets almost none of the progress bar (the bar would
        otherwise jump to 90 % of a "fast" run before the quick model starts) and a zero estimate."""
        self.head_end = CACHED_FEATURES_SHARE + (self.head_end - self.features_end)
        if self.config.preset != "best":
            self.head_end = 1.0
        self.features_end = CACHED_FEATURES_SHARE
        self.phases.estimate("features", 0.0)
        self.report(self.features_end, "features", f"Image features of all {n_images} images found in the cache")

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
            if total == 0:  # every image's features are in the cache: nothing to compute, nothing to wait for
                self._all_cached(len(samples))
                return
            if 0 < done < total:  # the first batches set the pace for the rest
                self.phases.estimate("features", (time.perf_counter() - t0) * total / done)
            frac = self.features_end * done / total
            cached = len(samples) - total
            self.report(frac, "features", f"Computing image features {done}/{total}"
                                          + (f" ({cached} more found in the cache)" if cached else ""))

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


def labels(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.int64)


def groups(samples: list[Sample]) -> list[str]:
    """What folds must keep whole ("" = on its own); see sampling.py for why."""
    return [s.group for s in samples]


def head_probs(head: nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), -1).numpy()


def history_row(stage, epoch, train_probs, y_train, val_probs, y_val, train_loss=None) -> dict:
    return {"stage": stage, "epoch": epoch,
            "train_loss": round(M.log_loss(train_probs, y_train) if train_loss is None else train_loss, 4),
            "val_loss": _round(M.log_loss(val_probs, y_val)),
            "train_accuracy": round(float((train_probs.argmax(1) == y_train).mean()), 4),
            "val_accuracy": _round(float((val_probs.argmax(1) == y_val).mean()) if len(y_val) else None),
            # k and n of that accuracy: a percentage is shown with the images it counts (k/n)
            "val_correct": int((val_probs.argmax(1) == y_val).sum()) if len(y_val) else None, "n_val": len(y_val)}


def _round(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 4)


def better(row: dict, other: dict) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    return (row["val_accuracy"], -row["val_loss"]) > (other["val_accuracy"], -other["val_loss"])
