"""The agreement page's forest plot: one row per kappa (reader pairs, the model against each reader,
Fleiss' kappa), a dot at the value and a bar over its 95% interval, on one kappa axis, so the
model's rows can be read against the readers' at a glance. Server-side SVG geometry like
reporting/charts.py: the template draws what this computes, no JS."""
import math

WIDTH = 760  # wider than the results page's charts: this one spans a full-width card
LABEL_W, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 180, 16, 10, 40
ROW_H = 24


def forest(rows: list[dict]) -> dict | None:
    """rows: {"label", "kappa", "interval" ([lo, hi] or None), "kind"}; rows without a kappa are left
    out (the table beside says why). None when nothing is left to draw."""
    drawn = [row for row in rows if row.get("kappa") is not None]
    if not drawn:
        return None
    lows = [row["kappa"] for row in drawn] + [row["interval"][0] for row in drawn if row.get("interval")]
    start = min(0.0, math.floor(min(lows) * 5) / 5)  # to a round 0.2 below the lowest value shown
    plot = {"x0": LABEL_W, "x1": WIDTH - PAD_RIGHT, "y0": PAD_TOP, "y1": PAD_TOP + ROW_H * len(drawn)}

    def x(value: float) -> float:
        return round(plot["x0"] + (plot["x1"] - plot["x0"]) * (min(max(value, start), 1.0) - start) / (1.0 - start), 1)

    marks = []
    for i, row in enumerate(drawn):
        y = PAD_TOP + ROW_H * i + ROW_H / 2
        low, high = row["interval"] or (row["kappa"], row["kappa"])
        interval = f"95% interval {low:.2f} to {high:.2f}" if row.get("interval") else "no interval"
        marks.append({"label": row["label"], "kind": row.get("kind", "pair"), "y": y, "cx": x(row["kappa"]),
                      "x_lo": x(low), "x_hi": x(high), "label_x": LABEL_W - 8,
                      "title": f"{row['label']}: kappa {row['kappa']:.2f}, {interval}"})
    ticks = [round(start + 0.2 * i, 1) for i in range(round((1.0 - start) / 0.2) + 1)]
    return {"width": WIDTH, "height": plot["y1"] + PAD_BOTTOM, "plot": plot, "rows": marks,
            "ticks": [{"x": x(t), "text": f"{t:.1f}"} for t in ticks],  # every 0.2: Landis & Koch's band edges
            "zero_x": x(0.0), "tick_label_y": plot["y1"] + 16, "axis_title_y": plot["y1"] + 34,
            "axis_title_x": round((plot["x0"] + plot["x1"]) / 2, 1)}
