"""Server-side SVG geometry for the results page: no chart library, works without JS.

The template draws what these functions compute; each returns plain dicts.
"""
WIDTH, HEIGHT, PAD = 520, 220, 36


def line_chart(series: dict[str, list[float]], *, y_max: float | None = None, y_label: str = "") -> dict:
    """Polylines for curves sharing one x axis (epochs); y from 0 to y_max (or the data's max)."""
    lengths = [len(values) for values in series.values() if values]
    if not lengths:
        return {"empty": True}
    n = max(lengths)
    top = y_max if y_max is not None else max(max(v) for v in series.values() if v) or 1.0
    lines = [
        {"name": name, "css": name.split()[0].lower(), "points": _points(values, n, top), "last": values[-1]}
        for name, values in series.items()
        if values
    ]
    return {
        "empty": False,
        "width": WIDTH,
        "height": HEIGHT,
        "lines": lines,
        "y_ticks": [_y_tick(top * f, top) for f in (0, 0.5, 1.0)],
        "x_ticks": [_x_tick(i, n) for i in sorted({0, (n - 1) // 2, n - 1})],
        "y_label": y_label,
        "plot": {"x0": PAD, "x1": WIDTH - PAD / 2, "y0": PAD / 2, "y1": HEIGHT - PAD},
    }


def _x(i: int, n: int) -> float:
    span = WIDTH - PAD * 1.5
    return PAD + (span * i / (n - 1) if n > 1 else span / 2)


def _y(value: float, top: float) -> float:
    span = HEIGHT - PAD * 1.5
    return HEIGHT - PAD - span * min(max(value / top, 0.0), 1.0)


def _points(values: list[float], n: int, top: float) -> str:
    return " ".join(f"{_x(i, n):.1f},{_y(v, top):.1f}" for i, v in enumerate(values))


def _y_tick(value: float, top: float) -> dict:
    return {"y": round(_y(value, top), 1), "text": f"{value:.2f}"}


def _x_tick(i: int, n: int) -> dict:
    return {"x": round(_x(i, n), 1), "text": str(i + 1)}


def confusion_rows(matrix: list[list[int]], classes: list[str]) -> list[dict]:
    """Table rows with a shade per cell: the share of that true class predicted as each class."""
    rows = []
    for true_index, counts in enumerate(matrix):
        total = sum(counts) or 1
        cells = [
            {"count": c, "alpha": round(c / total, 2), "correct": i == true_index, "predicted": classes[i]}
            for i, c in enumerate(counts)
        ]
        rows.append({"true": classes[true_index], "cells": cells, "total": sum(counts)})
    return rows
