"""The one training configuration; saved verbatim (asdict) into every artifact's meta.json."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

PRESETS = ("fast", "best")
AUGMENTATIONS = ("none", "light", "medium", "strong")
DEPTHS = ("auto", "top", "all")


@dataclass
class TrainConfig:
    # Name of the pretrained body (see zoo.list_bases()); the bundled one works offline.
    base: str = "efficientnet_lite0"
    # "fast": stage 1 only (linear head on cached features, seconds).
    # "best": stage 1, then stage 2 (fine-tune the top blocks or every layer, see `depth`); the better
    # one on validation is kept.
    preset: str = "best"
    # Maximum stage-2 epochs; early stopping on validation usually ends sooner, and no more are
    # planned than fit in the time budget. Every layer on knee_kl: 0.650 after 8, 0.667 after 10.
    epochs: int = 10
    # Stage-2 AdamW learning rate, the mean over the trained stages (layer_lr_decay spreads it from
    # the top down); stage 1 is a convex fit and needs none.
    lr: float = 3e-4
    # 16 rather than 32: twice the optimiser steps per epoch, which few-hundred-image projects need
    # (every layer on knee_kl: 0.625 at 16 over 8 epochs; a run at 32, cut to 4 epochs, 0.546).
    batch_size: int = 16
    # How many of the backbone's last blocks (stages) stage 2 trains; the head conv is always trained.
    # 3 rather than 2: on flowers the extra EfficientNet-Lite0 stage lifted val/ accuracy from
    # ~0.905 to ~0.92 for about one second more per epoch.
    unfrozen_blocks: int = 3
    # How much of the body stage 2 trains. "top": the last `unfrozen_blocks` blocks (cheap: the frozen
    # rest runs once per batch without gradients). "all": every layer, each block's learning rate
    # `layer_lr_decay` times the one above it, so the early, general layers move least. "auto": "all"
    # when the frozen features separate the classes poorly (images far from ImageNet: X-rays, micrographs),
    # else "top"; train.choose_depth says why on the results page.
    depth: str = "auto"
    # Measured on knee_kl's held-out val/ images, every layer, 8 epochs, the top stage at 3e-4: 0.7 gave
    # 0.625, 0.85 0.650, 1.0 (one rate for all) 0.642; training BatchNorm statistics too gave 0.538, so
    # they stay frozen. With 10 epochs, the top stage at 3e-4 gave 0.654, at 6e-4 0.700 and at 1e-3 0.629:
    # hence lr as the mean rate (the top stage at 1.76 lr = 5.3e-4 when every layer trains).
    layer_lr_decay: float = 0.85
    # Stage-2 augmentation strength: "none" | "light" | "medium" | "strong".
    augmentation: str = "medium"
    # Stage 2 stops, keeping its best epoch so far, once the whole fit has run this long.
    time_budget_s: float = 600
    # Share of each class held out for validation when the caller gives no validation set.
    val_fraction: float = 0.2
    # Below this many images in the smallest class a run makes no validation split: every image trains
    # the quick model (C by cross-validation over all of them), nothing is fine-tuned, and the figures are out-of-fold estimates.
    # Choosing C or an epoch on 4 validation images a class, and training on 16 images instead of 20,
    # costs more than it buys (bench/small_data_bench.py). 0: always split.
    small_data_below: int = 30
    # One seed drives the split, the initialisation and the augmentation: same seed, same model.
    seed: int = 0
    # Side of the square crop the backbone sees.
    image_size: int = 224
    # Once validation has chosen the stage (and stage 2's epoch count), train that recipe again on
    # training + validation images, so the final model learns from every image the user labelled.
    # The reported validation figures are those of the model before this retrain. For a kept quick
    # model this is one more linear fit on cached features (4-11 s); on held-out images
    # (bench/retrain_bench.py --refit-payoff, 2026-11-27) it gave knee_kl 0.521 -> 0.546,
    # brick_crack 0.995 -> 0.990, flowers 0.895 -> 0.890: cheap, and it helps where data is short.
    refit: bool = True
    # Also retrain a fine-tuned network on every image. Off by default: it costs about as long as
    # fine-tuning did up to its chosen epoch, and measured on knee_kl's 240 held-out images it did not
    # pay (0.496 -> 0.488, +80 s of a 1040 s run at 3 epochs; with the default 8 epochs on a loaded
    # 2-core machine it could not even finish in an hour's budget, and a user once waited seven
    # minutes for one that ran out of time). Needs refit.
    refit_finetuned: bool = False
    # "Images must not be mirrored": no flip augmentation and no flip test-time averaging, for
    # images where left and right differ (X-rays with side markers, text, asymmetric anatomy).
    no_mirroring: bool = False
    # Ordinal classes (grades such as KL0 < KL2 < KL3 < KL4), lowest first; empty: the classes have no
    # order. When set, every class list of the run (artifact, confusion matrix, per-class table) follows
    # it, and the figures add the mean absolute grade error and "within one grade" accuracy.
    class_order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        """Build from user/DB input: unknown keys are ignored, bad values raise ValueError."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in (d or {}).items():
            if key in known and value is not None:
                kwargs[key] = _coerce(key, value, known[key].type)
        if "unfrozen_blocks" in kwargs and "depth" not in kwargs:  # naming the top blocks means training those
            kwargs["depth"] = "top"  # (and a run saved before depth existed trained the top blocks)
        return cls(**kwargs)

    def validate(self) -> None:
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {', '.join(PRESETS)} (got {self.preset!r})")
        if self.augmentation not in AUGMENTATIONS:
            problems.append(f"augmentation must be one of {', '.join(AUGMENTATIONS)} (got {self.augmentation!r})")
        if self.depth not in DEPTHS:
            problems.append(f"depth must be one of {', '.join(DEPTHS)} (got {self.depth!r})")
        if not 0 < self.layer_lr_decay <= 1:
            problems.append(f"layer_lr_decay must be above 0 and at most 1 (got {self.layer_lr_decay})")
        if not 1 <= self.epochs <= 200:
            problems.append(f"epochs must be between 1 and 200 (got {self.epochs})")
        if not 0 < self.lr <= 1:
            problems.append(f"lr must be above 0 and at most 1 (got {self.lr})")
        if not 1 <= self.batch_size <= 1024:
            problems.append(f"batch_size must be between 1 and 1024 (got {self.batch_size})")
        if not 0 <= self.unfrozen_blocks <= 20:
            problems.append(f"unfrozen_blocks must be between 0 and 20 (got {self.unfrozen_blocks})")
        if not self.time_budget_s > 0:
            problems.append(f"time_budget_s must be positive (got {self.time_budget_s})")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be between 0 and 1, exclusive (got {self.val_fraction})")
        if not 0 <= self.small_data_below <= 100_000:
            problems.append(f"small_data_below must be between 0 and 100000 (got {self.small_data_below})")
        if not 32 <= self.image_size <= 1024:
            problems.append(f"image_size must be between 32 and 1024 (got {self.image_size})")
        if not isinstance(self.class_order, list) or not all(isinstance(c, str) and c for c in self.class_order):
            problems.append("class_order must be a list of class names")
        elif len(set(self.class_order)) != len(self.class_order):
            problems.append("class_order names a class twice")
        if not isinstance(self.base, str) or not self.base:
            problems.append("base must be a model name")
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems) + ".")


def _coerce(key: str, value, type_name) -> object:
    """Accept form-style strings ("8", "0.2") while rejecting nonsense with a readable message."""
    if str(type_name) == "list[str]":  # a list from JSON, or "KL0, KL2, KL3" from a form or the CLI
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
    if str(type_name) == "bool":  # the form and the CLI turn their choices into booleans already
        if not isinstance(value, bool):
            raise ValueError(f"Invalid training settings: {key} must be true or false (got {value!r}).")
        return value
    target = {"int": int, "float": float, "str": str}.get(str(type_name), str)
    if target is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"Invalid training settings: {key} must be a whole number (got {value!r}).")
    if isinstance(value, bool) and target is not str:
        raise ValueError(f"Invalid training settings: {key} must be a number (got {value!r}).")
    try:
        return target(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid training settings: {key} must be a {target.__name__} (got {value!r}).") from None

