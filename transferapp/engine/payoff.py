"""Is fine-tuning paying? Decided after each epoch, while less than half of it has run, so a user
never waits for the whole of a fine-tuning the engine then throws away (issue 31, item 2).

Fine-tuning's first epoch is mostly warm-up (the learning rate rising, the new head moving), so
"the fine-tuned model is behind" says little then. From the second epoch on, three things together
say that more epochs of the same schedule will not pay: the fine-tuned model's validation loss has
stopped falling; it is clearly behind the quick model alone on the images both scored (the paired
test of paired.py, which a lead of an image or two never passes); and averaged with the quick model
(each rescaled by its own temperature, as the kept average is) it is not ahead of the quick model
either, so it adds nothing the quick model lacks. No threshold here is fitted to a data set.
"""
from __future__ import annotations

import numpy as np

from .calibrate import fit_temperature
from .paired import paired_difference
from .zoo import average_probabilities

EARLIEST_EPOCH = 2  # one epoch is mostly warm-up: its loss has nothing to be compared with


def payoff_absent(*, epoch: int, planned: int, quick_probs: np.ndarray, tuned_probs: np.ndarray, y: np.ndarray,
                  val_losses: list[float]) -> str:
    """A sentence saying why fine-tuning stops now, or "" to go on. Only while at most half the
    planned epochs have run: past that, the rest costs less than what was spent, and stopping saves little."""
    if epoch < EARLIEST_EPOCH or 2 * epoch > planned or len(val_losses) < 2 or not len(y):
        return ""
    if val_losses[-1] < min(val_losses[:-1]):
        return ""  # still learning
    quick_right = quick_probs.argmax(1) == y
    alone = paired_difference(tuned_probs.argmax(1) == y, quick_right)
    if not (alone["clear"] and alone["difference"] < 0):
        return ""
    temperatures = (fit_temperature(tuned_probs, y), fit_temperature(quick_probs, y))
    average = average_probabilities(tuned_probs, quick_probs, temperatures)
    if paired_difference(average.argmax(1) == y, quick_right)["difference"] > 0:
        return ""  # behind alone, yet it adds to the quick model: worth keeping on
    return (f"Fine-tuning was stopped after {epoch} of {planned} epochs: its validation loss had stopped falling, it "
            f"was clearly behind the quick model alone ({alone['b_only']} validation images the quick model got right "
            f"and it got wrong, {alone['a_only']} the other way), and averaged with the quick model it added nothing, "
            f"so more epochs were unlikely to pay.")
