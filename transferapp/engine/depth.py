"""How deep fine-tuning goes: the top blocks or every layer, from how well the frozen features separate the classes."""
from __future__ import annotations

import numpy as np

from .config import TrainConfig
from .zoo import Backbone

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
