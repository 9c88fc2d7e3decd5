"""How deep fine-tuning goes: the top blocks or every layer, from two signals: how well the frozen
features separate the classes, and whether the images have colour at all."""
from __future__ import annotations

import numpy as np

from .config import TrainConfig
from .data import Sample, load_rgb
from .zoo import Backbone

# --- stage 2: fine-tune the top blocks, or every layer ------------------------------------

# The quick model's skill on validation images, from chance (0) to perfect (1), below which the
# pretrained features are said to separate the classes poorly and "auto" depth trains every layer.
# Measured 2026-11-27 (EfficientNet-Lite0, bench/run_bench.py): flowers 0.88 and brick_crack 0.97
# (photos: the top blocks beat the reference full fine-tune there in under half its time), knee
# X-rays 0.34 (the top blocks alone stayed near the linear probe; every layer beat the full fine-tune).
POOR_SEPARATION = 0.7

# The second signal (issue 31): images with no colour (X-ray, CT, MRI, ultrasound, grey microscopy)
# are far from ImageNet's photos even where the frozen features separate the classes well. Outside
# chest X-rays (skill 0.89) went to the top blocks and scored 0.800 where every layer scored 0.893;
# knee X-rays 0.704 with every layer against 0.650 for a plain full fine-tune. The early, general
# filters were learnt on colour photos, and grey images use only their R=G=B diagonal: those layers
# are the ones worth adapting. Judged on a fixed sample of training images, not tuned to any set:
# an image is colourless when its channels differ by under COLOURLESS_LEVELS grey levels on average.
COLOUR_SAMPLE = 32
COLOURLESS_LEVELS = 2.0
COLOURLESS_SHARE = 0.8


def choose_depth(config: TrainConfig, backbone: Backbone, val_probs: np.ndarray, y_val: np.ndarray,
                 train: list[Sample] | None = None) -> tuple[int, str]:
    """(the first body stage stage 2 trains, why in plain English), from validation images and a
    sample of the training images' colour."""
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
    grey = colourless_share(train or [])
    if grey >= COLOURLESS_SHARE:
        return 0, (f"{grey:.0%} of a sample of your training images have no colour (as X-rays, scans and grey "
                   f"microscopy): the pretrained network learnt its early layers on colour photos, so every layer "
                   f"was fine-tuned, the early, general ones more gently, although the quick model already gets "
                   f"{skill:.0%} of the way from chance to perfect.")
    return top, (f"The pretrained features already separate your classes well (the quick model gets {skill:.0%} of "
                 f"the way from chance to perfect on validation images), so only {depth_words(top, len(backbone.model))} "
                 f"were fine-tuned: quicker, and as good on such images.")


def colourless_share(samples: list[Sample], n: int = COLOUR_SAMPLE) -> float:
    """The share of up to `n` training images (evenly spread over the sorted list, so a run always
    reads the same ones) whose colour channels are the same to within COLOURLESS_LEVELS."""
    if not samples:
        return 0.0
    step = max(1, len(samples) // n)
    chosen = sorted(samples, key=lambda s: s.key)[::step][:n]
    return sum(_is_colourless(s.path) for s in chosen) / len(chosen)


def _is_colourless(path: str) -> bool:
    # No try/except: every training image was decoded for its features a moment ago, and a
    # catch-all here would swallow the worker's time-limit exception, which the decoder reports as
    # a DecodeError when it strikes mid-decode (the run then went on past TRAINING_TIMEOUT_S).
    image = load_rgb(path)
    image.thumbnail((64, 64))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    spread = np.abs(pixels[..., 0] - pixels[..., 1]).mean() + np.abs(pixels[..., 1] - pixels[..., 2]).mean()
    return float(spread) < COLOURLESS_LEVELS


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
