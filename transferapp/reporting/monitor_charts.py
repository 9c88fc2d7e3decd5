"""The monitoring page's charts (#25) as inline SVG: each function returns a plain dict of shapes
(grid lines, bars, lines, dots, texts, each with a CSS class and a tooltip) that one template
partial draws, so the page needs no chart library and no script (see charts.py for the results page).
"""
from __future__ import annotations

from datetime import date

from transferapp.reporting.charts import _nice_range

WIDTH, HEIGHT = 520, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 14, 12, 42
SOURCE_NAMES = {"page": "Predict page", "api": "API", "batch": "Batch"}


def _frame(y_top: float, y_step: float, percent: bool, title: str, x_label: str = "") -> dict:
    chart = {"width": WIDTH, "height": HEIGHT, "title": title, "grid": [], "rects": [], "lines": [], "dots": [],
             "texts": [], "x0": LEFT, "x1": WIDTH - RIGHT, "y1": HEIGHT - BOTTOM, "legend": []}
    steps = round(y_top / y_step)
    for k in range(steps + 1):
        value = y_step * k
        y = _y(value, y_top)
        if percent:
            text = f"{value * 100:.0f}%" if round(y_step * 100, 6) == round(y_step * 100) else f"{value * 100:.1f}%"
        else:
            text = f"{value:.0f}" if y_step >= 1 else f"{value:.2g}"
        chart["grid"].append({"y": y})
        chart["texts"].append({"x": LEFT - 7, "y": y, "text": text, "anchor": "end", "css": "tick"})
    if x_label:
        chart["texts"].append({"x": round((LEFT + WIDTH - RIGHT) / 2, 1), "y": HEIGHT - 6, "text": x_label,
                               "anchor": "middle", "css": "axis-title"})
    return chart


def _y(value: float, top: float) -> float:
    span = HEIGHT - TOP - BOTTOM
    return round(HEIGHT - BOTTOM - span * min(max(value / top if top else 0, 0.0), 1.0), 1)


def _slots(n: int) -> tuple[float, float]:
    """(width of one slot, width of a bar in it) for n bars across the plot."""
    slot = (WIDTH - LEFT - RIGHT) / max(n, 1)
    return slot, max(min(slot * 0.7, 36), 1.5)


def _day_ticks(chart: dict, days: list[str], slot: float) -> None:
    """Date labels under the bars: about six, the first and the last included."""
    n = len(days)
    every = max(1, round(n / 6))
    for i, day in enumerate(days):
        if i % every == 0 or i == n - 1 and n - 1 - (n - 1) // every * every >= every / 2:
            chart["texts"].append({"x": round(LEFT + slot * (i + 0.5), 1), "y": HEIGHT - BOTTOM + 17,
                                   "text": _short(day), "anchor": "middle", "css": "tick"})


def _short(day: str) -> str:
    d = date.fromisoformat(day)
    return f"{d.day} {d:%b}"


def predictions_per_day(by_day: list[dict]) -> dict:
    """Stacked bars: each day's predictions, by source."""
    top, step = _nice_range(max([row["total"] for row in by_day] + [1]))
    step = max(step, 1) if top >= 4 else 1
    top = max(top, step)
    chart = _frame(top, step, False, "Predictions per day, by source")
    slot, bar = _slots(len(by_day))
    for i, row in enumerate(by_day):
        x, base = LEFT + slot * i + (slot - bar) / 2, 0
        for source, name in SOURCE_NAMES.items():
            count = row.get(source, 0)
            if count:
                y0, y1 = _y(base, top), _y(base + count, top)
                chart["rects"].append({"x": round(x, 1), "y": y1, "w": round(bar, 1), "h": round(y0 - y1, 1),
                                       "css": f"src-{source}", "title": f"{_short(row['day'])}: {count} from {name}"})
                base += count
    _day_ticks(chart, [row["day"] for row in by_day], slot)
    chart["legend"] = [{"css": f"src-{source}", "text": name} for source, name in SOURCE_NAMES.items()]
    return chart


def daily_line(by_day: list[dict], field: str, title: str, name: str, *, percent: bool = True,
               reference: float | None = None, reference_text: str = "", also: tuple[str, str] | None = None) -> dict:
    """One value per day as a line (broken where a day has none), with an optional dashed reference
    and an optional second series `also` = (field, name) on the same axis."""
    series = [(field, name, "series")] + ([(also[0], also[1], "series2")] if also else [])
    present = [row[f] for f, _, _ in series for row in by_day if row.get(f) is not None]
    highest = max(present + ([reference] if reference is not None else []) + [0.0])
    if percent:  # a share: at least 0 to 10%, so that a 2% reference is not the top of the chart
        top, step = (1.0, 0.25) if highest > 0.5 else _nice_range(max(highest, 0.1))
    else:
        top, step = _nice_range(max(highest, 0.0001))
    chart = _frame(top, step, percent, title)
    slot, _ = _slots(len(by_day))
    for key, label, css in series:
        run: list[str] = []
        for i, value in enumerate([row.get(key) for row in by_day] + [None]):
            if value is None:
                if run:
                    chart["lines"].append({"points": " ".join(run), "css": css})
                run = []
                continue
            x, y = round(LEFT + slot * (i + 0.5), 1), _y(value, top)
            run.append(f"{x},{y}")
            shown = f"{value * 100:.1f}%" if percent else f"{value:.3f}"
            chart["dots"].append({"x": x, "y": y, "css": css, "title": f"{_short(by_day[i]['day'])}, {label}: {shown}"})
        chart["legend"].append({"css": css, "text": label})
    if reference is not None:
        y = _y(reference, top)
        chart["lines"].append({"points": f"{LEFT},{y} {WIDTH - RIGHT},{y}", "css": "reference"})
        chart["legend"].append({"css": "reference", "text": reference_text})
    _day_ticks(chart, [row["day"] for row in by_day], slot)
    return chart


def novelty_per_day(by_day: list[dict], threshold: float | None) -> dict:
    """Each day's novelty scores: a bar from the 10th to the 90th percentile and a dot at the median,
    with the model's threshold (above it, "unlike anything it was trained on") dashed."""
    highs = [row["novelty_p90"] for row in by_day if row.get("novelty_p90") is not None]
    top, step = _nice_range(max(highs + ([threshold] if threshold else []) + [0.0001]))
    chart = _frame(top, step, False, "Novelty score per day (higher: less like the training images)")
    slot, bar = _slots(len(by_day))
    bar = min(bar, 10)
    for i, row in enumerate(by_day):
        if row.get("novelty_median") is None:
            continue
        x = LEFT + slot * (i + 0.5)
        y_low, y_high = _y(row["novelty_p10"], top), _y(row["novelty_p90"], top)
        chart["rects"].append({"x": round(x - bar / 2, 1), "y": y_high, "w": round(bar, 1), "h": round(max(y_low - y_high, 1), 1),
                               "css": "spread", "title": f"{_short(row['day'])}: 80% of scores between "
                                                         f"{row['novelty_p10']:.3f} and {row['novelty_p90']:.3f}"})
        chart["dots"].append({"x": round(x, 1), "y": _y(row["novelty_median"], top), "css": "series",
                              "title": f"{_short(row['day'])}: median {row['novelty_median']:.3f}"})
    if threshold:
        y = _y(threshold, top)
        chart["lines"].append({"points": f"{LEFT},{y} {WIDTH - RIGHT},{y}", "css": "reference"})
        chart["legend"] = [{"css": "series", "text": "median"}, {"css": "spread", "text": "middle 80%"},
                           {"css": "reference", "text": f"the model's threshold ({threshold:.3f})"}]
    _day_ticks(chart, [row["day"] for row in by_day], slot)
    return chart


def class_mix_chart(mix: list[dict]) -> dict:
    """Per class, two bars side by side: its share of this period's answers and of the training images."""
    shares = [row[key] or 0 for row in mix for key in ("predicted_share", "training_share")]
    top, step = (1.0, 0.25) if max(shares + [0]) > 0.5 else _nice_range(max(shares + [0.01]))
    chart = _frame(top, step, True, "Answers per class, against the training images")
    slot, bar = _slots(len(mix))
    half = min(bar / 2, 18)
    for i, row in enumerate(mix):
        centre = LEFT + slot * (i + 0.5)
        for offset, key, css, what in ((-half, "predicted_share", "predicted", "of this period's answers"),
                                       (0, "training_share", "training", "of the training images")):
            share = row[key]
            if share is None:
                continue
            y = _y(share, top)
            chart["rects"].append({"x": round(centre + offset, 1), "y": y, "w": round(half, 1),
                                   "h": round(HEIGHT - BOTTOM - y, 1), "css": css,
                                   "title": f"{row['label']}: {share * 100:.0f}% {what}"})
        chart["texts"].append({"x": round(centre, 1), "y": HEIGHT - BOTTOM + 17, "text": row["label"][:14],
                               "anchor": "middle", "css": "tick"})
    chart["legend"] = [{"css": "predicted", "text": "this period's answers"},
                       {"css": "training", "text": "training images"}]
    return chart


def confidence_chart(histogram: dict) -> dict:
    """How sure the answers were: how many had each top-class probability (10 bins from 0 to 100%)."""
    bins = histogram["bins"]
    top, step = _nice_range(max(bins + [1]))
    step = max(step, 1)
    top = max(top, step)
    chart = _frame(top, step, False, "How sure the answers were", x_label="probability of the top class")
    slot, bar = _slots(len(bins))
    bar = slot * 0.9
    for i, count in enumerate(bins):
        low, high = i * 100 // len(bins), (i + 1) * 100 // len(bins)
        if count:
            y = _y(count, top)
            chart["rects"].append({"x": round(LEFT + slot * i + (slot - bar) / 2, 1), "y": y, "w": round(bar, 1),
                                   "h": round(HEIGHT - BOTTOM - y, 1), "css": "predicted",
                                   "title": f"{count} answer{'s' if count != 1 else ''} at {low}-{high}%"})
        if i % 2 == 0:
            chart["texts"].append({"x": round(LEFT + slot * i, 1), "y": HEIGHT - BOTTOM + 17, "text": f"{low}%",
                                   "anchor": "middle", "css": "tick"})
    chart["texts"].append({"x": WIDTH - RIGHT, "y": HEIGHT - BOTTOM + 17, "text": "100%", "anchor": "end", "css": "tick"})
    return chart


def accuracy_chart(live: list[dict], validation: dict | None) -> dict | None:
    """Live accuracy per version (k/n, a dot, and its 95% interval as a bar) beside the served
    version's validation figure, on one 0-100% axis, one row per figure."""
    rows = [{"name": f"v{row['version']} live", "value": row["k"] / row["n"], "interval": row["interval"],
             "css": "live", "text": f"{row['k']}/{row['n']} right"} for row in live if row["n"]]
    if validation and validation.get("accuracy") is not None:
        rows.append({"name": f"v{validation['version']} validation", "value": validation["accuracy"],
                     "interval": validation.get("interval"), "css": "validation",
                     "text": f"{validation['accuracy'] * 100:.0f}% on {validation.get('n') or '?'} images"})
    if not rows:
        return None
    row_h, left, right = 34, 130, WIDTH - 110
    height = 24 + row_h * len(rows)
    chart = {"width": WIDTH, "height": height, "title": "Accuracy on real work and on validation", "grid": [],
             "rects": [], "lines": [], "dots": [], "texts": [], "legend": [], "horizontal": True, "narrow": True}
    for pct in (0, 25, 50, 75, 100):
        x = round(left + (right - left) * pct / 100, 1)
        chart["lines"].append({"points": f"{x},4 {x},{height - 20}", "css": "gridline"})
        chart["texts"].append({"x": x, "y": height - 6, "text": f"{pct}%", "anchor": "middle", "css": "tick"})
    def to_x(value: float) -> float:
        return round(left + (right - left) * value, 1)

    for i, row in enumerate(rows):
        y = 4 + row_h * i + row_h / 2
        if row["interval"]:
            low, high = row["interval"]
            chart["rects"].append({"x": to_x(low), "y": round(y - 5, 1), "w": max(round(to_x(high) - to_x(low), 1), 1),
                                   "h": 10, "css": row["css"],
                                   "title": f"{row['name']}: 95% interval {low * 100:.0f}-{high * 100:.0f}%"})
        chart["dots"].append({"x": to_x(row["value"]), "y": round(y, 1), "css": row["css"],
                              "title": f"{row['name']}: {row['value'] * 100:.0f}%"})
        chart["texts"].append({"x": left - 8, "y": round(y, 1), "text": row["name"], "anchor": "end", "css": "label"})
        chart["texts"].append({"x": right + 8, "y": round(y, 1), "text": row["text"], "anchor": "start", "css": "label"})
    return chart
