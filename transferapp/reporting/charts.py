"""Server-side SVG geometry for the results page: no chart library, works without JS.

The template draws what these functions compute; each returns plain dicts.
"""
import math

# viewBox size; the SVG scales to the card's width (about 480-520 px on a desktop), so
# the font sizes in app.css (13 user units) render at roughly 12 px.
WIDTH, HEIGHT = 520, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 14, 12, 42
MAX_MARKERS = 40  # beyond this many epochs only the last point of each line gets a dot


def line_chart(
    series: dict[str, list[float]], *, y_max: float | None = None, y_label: str = "", percent: bool | None = None,
    x_label: str = "epoch", x_texts: list[str] | None = None,
) -> dict:
    """Lines for curves sharing one x axis (epochs); y from 0 to y_max (or a round number above the data).

    Every point gets a small dot (so a single epoch still shows); accuracy-like charts
    (y_label starting with "acc", or percent=True) label the y axis in percent.
    """
    lengths = [len(values) for values in series.values() if values]
    if not lengths:
        return {"empty": True}
    n = max(lengths)
    if percent is None:
        percent = y_label.lower().startswith("acc")
    data_max = max(max(v) for v in series.values() if v)
    if y_max is not None:
        top, step = y_max, y_max / 4
    else:
        top, step = _nice_range(data_max)
    y_ticks = [_y_tick(step * k, top, step, percent) for k in range(int(round(top / step)) + 1)]
    lines = []
    for name, values in series.items():
        if not values:
            continue
        xy = [(_x(i, n), _y(v, top)) for i, v in enumerate(values)]
        shown = range(len(values)) if n <= MAX_MARKERS else [len(values) - 1]
        lines.append({
            "name": name,
            "css": name.split()[0].lower(),
            "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in xy),
            "markers": [
                {"x": round(xy[i][0], 1), "y": round(xy[i][1], 1),
                 "title": f"{name}, {x_label} {x_texts[i] if x_texts else i + 1}: {_fmt(values[i], percent)}"}
                for i in shown
            ],
            "last": values[-1],
            "last_text": _fmt(values[-1], percent),
        })
    return {
        "empty": False,
        "width": WIDTH,
        "height": HEIGHT,
        "lines": lines,
        "y_ticks": y_ticks,
        "x_ticks": [_x_tick(i, n, x_texts) for i in (range(n) if x_texts else _epoch_ticks(n))],
        "y_label": y_label,
        "x_label": x_label,
        "x_label_y": HEIGHT - 6,
        "x_label_x": round((PAD_LEFT + WIDTH - PAD_RIGHT) / 2, 1),
        "tick_label_y": HEIGHT - PAD_BOTTOM + 17,
        "y_tick_label_x": PAD_LEFT - 7,
        "plot": {"x0": PAD_LEFT, "x1": WIDTH - PAD_RIGHT, "y0": PAD_TOP, "y1": HEIGHT - PAD_BOTTOM},
    }


def _nice_range(data_max: float) -> tuple[float, float]:
    """A round top above data_max and a tick step dividing it into 4-5 parts (0.0123 -> 0.015, 0.005)."""
    if not data_max or data_max <= 0 or not math.isfinite(data_max):
        return 1.0, 0.25
    raw = data_max / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * magnitude
        if step >= raw:
            break
    top = step * math.ceil(data_max / step - 1e-9)
    return top, step


def _x(i: int, n: int) -> float:
    span = WIDTH - PAD_LEFT - PAD_RIGHT
    inset = 10  # keeps the first and last dot off the axes
    return PAD_LEFT + (inset + (span - 2 * inset) * i / (n - 1) if n > 1 else span / 2)


def _y(value: float, top: float) -> float:
    span = HEIGHT - PAD_TOP - PAD_BOTTOM
    return HEIGHT - PAD_BOTTOM - span * min(max(value / top, 0.0), 1.0)


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.1f}%".replace(".0%", "%")
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _y_tick(value: float, top: float, step: float, percent: bool) -> dict:
    if percent:
        text = f"{value * 100:.0f}%"
    else:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 2
        if round(step, decimals) != round(step, decimals + 3):  # e.g. step 0.25 or 0.025
            decimals += 1
        text = f"{value:.{decimals}f}"
    return {"y": round(_y(value, top), 1), "text": text}


def _epoch_ticks(n: int) -> list[int]:
    """Indexes (0-based) of the epochs to label: the first, the last, and round numbers between."""
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 10**9) if n / s <= 12)
    inner = [e for e in range(step, n, step) if step == 1 or (e - 1 >= step * 0.5 and n - e >= step * 0.5)]
    return sorted({0, n - 1, *(e - 1 for e in inner)})


def _x_tick(i: int, n: int, texts: list[str] | None = None) -> dict:
    return {"x": round(_x(i, n), 1), "text": texts[i] if texts else str(i + 1)}


def learning_curve_chart(curve: dict | None) -> dict | None:
    """Validation accuracy against the number of training images used."""
    if not curve:
        return None
    chart = line_chart({"val accuracy": curve["accuracy"]}, y_max=1.0, y_label="accuracy",
                       x_label="training images", x_texts=[str(n) for n in curve["n_train"]])
    chart["verdict"] = curve["verdict"]
    chart["per_class"] = [
        {"name": name, "values": [f"{v * 100:.0f}%" if v is not None else "–" for v in values]}
        for name, values in curve["per_class"].items()
    ]
    chart["shares"] = [f"{f * 100:.0f}%" for f in curve["fractions"]]
    chart["out_of_fold"] = bool(curve.get("out_of_fold"))
    return chart


CORRECT_RGB = (79, 70, 229)  # the accent (--accent): right answers, on the diagonal
MIXUP_RGB = (220, 38, 38)    # red: mix-ups
WHITE_TEXT_MAX_LUMINANCE = 0.183  # white on darker has >= 4.5:1 (WCAG AA); black on lighter has >= 4.6:1


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""
    def linear(channel):
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def shade_over_white(rgb: tuple[int, int, int], alpha: float) -> tuple[float, float, float]:
    """The colour a cell shows: its rgba shade over the white card it sits on."""
    return tuple(alpha * c + (1 - alpha) * 255 for c in rgb)


def confusion_rows(matrix: list[list[int]], classes: list[str]) -> list[dict]:
    """Table rows with a shade per cell: the share of that true class predicted as each class.

    "dark" marks cells shaded strongly enough to need white text (the others get black): the
    split is at the luminance where both have WCAG AA contrast, so every count stays readable.
    """
    rows = []
    for true_index, counts in enumerate(matrix):
        total = sum(counts) or 1
        cells = []
        for i, c in enumerate(counts):
            alpha = round(c / total, 2)
            rgb = CORRECT_RGB if i == true_index else MIXUP_RGB
            dark = relative_luminance(shade_over_white(rgb, alpha)) <= WHITE_TEXT_MAX_LUMINANCE
            cells.append({
                "count": c, "alpha": alpha, "dark": dark, "correct": i == true_index,
                "rgb": ", ".join(str(v) for v in rgb),
                "predicted": classes[i] if i < len(classes) else str(i),
            })
        name = classes[true_index] if true_index < len(classes) else str(true_index)
        rows.append({"true": name, "cells": cells, "total": sum(counts)})
    return rows


def per_class_rows(per_class: dict[str, dict], classes: list[str]) -> list[tuple[str, dict]]:
    """(class name, metrics) pairs in the order of `classes` (the confusion matrix's order).

    A class without metrics (no validation images) gets an empty dict, so the table shows
    dashes; classes only in per_class follow at the end. The pairs have the same shape as
    per_class.items(), so the template can fall back to that.
    """
    rows = [(name, per_class.get(name) or {}) for name in classes]
    rows += [(name, m) for name, m in per_class.items() if name not in classes]
    return rows


# The engine's setting names, in the words of the training form.
SETTING_LABELS = {
    "base": "Base model",
    "preset": "Strategy",
    "epochs": "Fine-tuning epochs (at most)",
    "lr": "Learning rate",
    "batch_size": "Batch size",
    "depth": "Fine-tuning depth",
    "unfrozen_blocks": "Unfrozen top blocks (when only the top is fine-tuned)",
    "layer_lr_decay": "Learning-rate factor per block, going down",
    "augmentation": "Augmentation",
    "time_budget_s": "Time budget",
    "val_fraction": "Validation share",
    "small_data_below": "No validation split below (images in the smallest class)",
    "seed": "Random seed",
    "image_size": "Image size",
    "refit": "Retrained on all images",
    "refit_finetuned": "A fine-tuned model retrained on all images too",
    "no_mirroring": "Images must not be mirrored",
    "class_order": "Grades, lowest first",
}
# Settings only fine-tuning reads: a "fast" run never used them, so its table leaves them out.
FINETUNE_ONLY = {"epochs", "lr", "batch_size", "unfrozen_blocks", "augmentation", "depth", "layer_lr_decay"}


def settings_rows(config: dict, metrics: dict | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs for the "Settings used" table, known settings first in form order; with
    the run's metrics, the validation share says what the run really used."""
    unused = FINETUNE_ONLY if config.get("preset") == "fast" else set()
    if config.get("depth") == "all":  # every layer trained: no count of top blocks applied
        unused = unused | {"unfrozen_blocks"}
    shown = {key: value for key, value in config.items() if key not in unused}
    rows = [(SETTING_LABELS[key], _setting_text(key, shown[key])) for key in SETTING_LABELS if key in shown]
    used = validation_share_used(config, metrics or {})
    if used:
        rows = [(name, used if name == SETTING_LABELS.get("val_fraction") else value) for name, value in rows]
    rows += [(key.replace("_", " ").capitalize(), _setting_text(key, value)) for key, value in shown.items() if key not in SETTING_LABELS]
    return rows


def validation_share_used(config: dict, metrics: dict) -> str | None:
    """The share of images that validated the run, where it is not the setting: an imported
    train/validation split used as given, or a small project with no validation split. None when
    the setting is what was used (or a run from before these figures were kept)."""
    n_val = (metrics.get("n_val") or 0) + (metrics.get("n_calibration_set_aside") or 0)
    n = (metrics.get("n_train") or 0) + n_val
    if not n:
        return None
    if metrics.get("split_imported"):
        setting = f"{100 * config['val_fraction']:.0f}%" if config.get("val_fraction") is not None else "the setting"
        return (f"{100 * n_val / n:.0f}% ({n_val} of {n} images): the train/validation split imported with the "
                f"images, used as given ({setting} was not applied)")
    if not n_val:
        return "None: a small project, every image trained the model (figures are out-of-fold)"
    return None


def _setting_text(key: str, value) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if key == "val_fraction":
        return f"{100 * value:.0f}% of each class"
    if key == "depth":
        return {"auto": "Automatic", "top": "Top blocks only", "all": "Every layer"}.get(value, value)
    if key == "small_data_below":
        return "Never: always split" if value == 0 else f"{value} images"
    if key == "time_budget_s":
        return f"{value / 60:g} min"
    if key == "image_size":
        return f"{value} × {value} pixels"
    if key == "class_order":
        return " < ".join(value) if value else "Not ordered"
    if key in ("preset", "augmentation"):
        return str(value).capitalize()
    return f"{value:g}" if isinstance(value, float) else str(value)
