"""The payoff rule stops fine-tuning early only when it is clearly not paying (issue 31, item 2)."""
import numpy as np

from transferapp.engine.payoff import payoff_absent


def _probs(y, right, k=2, sure=0.9):
    """Probabilities that get the images where `right` is True right, the others wrong."""
    probs = np.full((len(y), k), (1 - sure) / (k - 1))
    for i, (label, ok) in enumerate(zip(y, right)):
        probs[i, label if ok else (label + 1) % k] = sure
    return probs


Y = np.repeat([0, 1], 40)
QUICK = _probs(Y, np.arange(80) % 10 != 0, sure=0.7)  # the quick model: 72 of 80 right
TUNED_BAD = _probs(Y, np.arange(80) % 2 == 0, sure=0.6)  # the fine-tuned one: 40 of 80, no better than chance


def test_a_fine_tuning_clearly_behind_with_a_stalled_loss_stops_before_half_its_plan():
    why = payoff_absent(epoch=2, planned=8, quick_probs=QUICK, tuned_probs=TUNED_BAD, y=Y, val_losses=[0.9, 0.95])
    assert "stopped after 2 of 8 epochs" in why and "clearly behind the quick model alone" in why
    assert "added nothing" in why


def test_it_goes_on_while_it_is_still_learning_too_early_to_tell_or_past_half_its_plan():
    common = {"quick_probs": QUICK, "tuned_probs": TUNED_BAD, "y": Y}
    assert payoff_absent(epoch=2, planned=8, val_losses=[0.9, 0.7], **common) == ""  # loss still falling
    assert payoff_absent(epoch=1, planned=8, val_losses=[0.9], **common) == ""  # warm-up epoch
    assert payoff_absent(epoch=5, planned=8, val_losses=[0.9, 0.9, 0.9, 0.9, 0.95], **common) == ""  # past half


def test_a_lead_of_an_image_or_two_stops_nothing():
    close = _probs(Y, (np.arange(80) % 10 != 0) & (np.arange(80) != 1), sure=0.7)  # one image behind: noise
    assert payoff_absent(epoch=2, planned=8, quick_probs=QUICK, tuned_probs=close, y=Y, val_losses=[0.5, 0.6]) == ""


def test_a_fine_tuning_behind_alone_but_adding_to_the_average_goes_on():
    # Surely right on the 8 images the quick model gets wrong (and on 32 more), unsurely wrong on 40 it gets
    # right: clearly behind alone (-45 points), yet the average gets all 80 right.
    i = np.arange(80)
    sure_right = (i % 10 == 0) | (i >= 60) | ((i >= 40) & (i < 52))
    helps = _probs(Y, sure_right, sure=0.95)
    helps[~sure_right] = _probs(Y, np.zeros(80, bool), sure=0.55)[~sure_right]
    assert payoff_absent(epoch=2, planned=8, quick_probs=QUICK, tuned_probs=helps, y=Y, val_losses=[0.5, 0.6]) == ""
