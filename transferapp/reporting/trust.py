"""What the results page shows about how far a run's answers can be trusted: the headline figure
with its evidence, prediction-set quality, the reliability diagram, suspected mislabels, odd ones
out, clickable confusion cells and the two-class decision threshold. Reads only (no writes)."""
from transferapp.engine.metrics import rate
from transferapp.library import selectors as library_selectors
from transferapp.models import TrainingRun

SUSPECTS_SHOWN = 25
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def run_context(run: TrainingRun, cell: str = "") -> dict:
    metrics = run.metrics or {}
    if "n_scored" not in metrics:  # a run from before these figures existed, or not finished
        return {"trust": None}
    classes = metrics.get("classes", run.classes)
    return {"trust": {
        "headline": _headline(metrics, classes),
        "sets": (metrics.get("trust") or {}).get("eval"),
        "calibration": metrics.get("trust") or {},
        "reliability_chart": reliability_chart((metrics.get("trust") or {}).get("reliability")),
        "suspects": suspects(run, limit=SUSPECTS_SHOWN),
        "odd_ones": _odd_ones(run, metrics, classes),
        "cell": _cell(run, metrics, classes, cell),
        "binary": _binary(run, metrics, classes),
    }}


def _headline(metrics: dict, classes: list[str]) -> dict:
    per_class = metrics.get("per_class", {})
    return {
        "on_test": metrics.get("evaluated_on") == "test",
        "out_of_fold": metrics.get("evaluated_on") == "out_of_fold",
        # the served model's out-of-fold estimate (a kept quick model retrained on every image)
        "refit_out_of_fold": bool(metrics.get("refit_out_of_fold")),
        # the validated model, retrained on every image since: the served one may answer differently
        "before_retrain": metrics.get("headline_model") == "before_retrain",
        "refit_n": (metrics.get("refit") or {}).get("n_images"),
        "accuracy": metrics.get("accuracy"), "ci": metrics.get("accuracy_ci"), "n": metrics.get("n_scored"),
        "k": metrics.get("n_correct"),
        "balanced": metrics.get("balanced_accuracy"), "baseline": metrics.get("baseline"),
        "validation": metrics.get("validation"),
        "recalls": [{"name": name, "recall": (per_class.get(name) or {}).get("recall"),
                     "support": (per_class.get(name) or {}).get("support", 0)} for name in classes],
    }


def suspects(run: TrainingRun, limit: int, label=None) -> list[dict]:
    """The run's suspected mislabels still worth a look: the image exists, still carries the label
    the run saw, and the user has not said the label is right."""
    metrics, classes = run.metrics or {}, (run.metrics or {}).get("classes", run.classes)
    rows = metrics.get("suspected_mislabels") or []
    images = library_selectors.images_by_pk(project=run.project, pks=[int(r["key"]) for r in rows if str(r["key"]).isdigit()])
    labels = {lab.name: lab for lab in run.project.labels.all()}
    found = []
    for row in rows:
        image = images.get(int(row["key"])) if str(row["key"]).isdigit() else None
        given, suggested = classes[row["label"]], classes[row["suggested"]]
        given_label = labels.get(given)  # by id: image.label.name would be one query per image
        if image is None or image.label_confirmed or given_label is None or image.label_id != given_label.pk:
            continue
        if label is not None and image.label_id != label.pk:
            continue
        found.append({**row, "image": image, "given": given, "suggested_name": suggested,
                      "suggested_label": labels.get(suggested)})
        if len(found) == limit:
            break
    return found


def _odd_ones(run, metrics, classes) -> list[dict]:
    rows = metrics.get("odd_ones_out") or []
    images = library_selectors.images_by_pk(project=run.project, pks=[int(r["key"]) for r in rows if str(r["key"]).isdigit()])
    return [{**r, "image": images[int(r["key"])], "given": classes[r["label"]]}
            for r in rows if str(r["key"]).isdigit() and int(r["key"]) in images]


def _cell(run, metrics, classes, cell: str) -> dict | None:
    """The images behind one confusion-matrix cell ("true-predicted" indices)."""
    true, _, predicted = cell.partition("-")
    keys = metrics.get("confusion_keys")
    if not (true.isdigit() and predicted.isdigit() and keys) or max(int(true), int(predicted)) >= len(classes):
        return None
    cell_keys = keys[int(true)][int(predicted)]
    images = library_selectors.images_by_pk(project=run.project, pks=[int(k) for k in cell_keys if str(k).isdigit()])
    return {"true": classes[int(true)], "predicted": classes[int(predicted)], "count": len(cell_keys),
            "images": [images[int(k)] for k in cell_keys if str(k).isdigit() and int(k) in images]}


def _binary(run, metrics, classes) -> dict | None:
    """Sensitivity and specificity of the evaluation images at each threshold on the positive
    class's score, for the class the user calls positive."""
    scores = metrics.get("eval_scores")
    if len(classes) != 2 or not scores:
        return None
    positive = run.positive_class if run.positive_class in classes else classes[1]
    pos = classes.index(positive)
    rows = []
    for t in THRESHOLDS:
        called = [(y, (p if pos == 1 else 1 - p) >= t) for y, p in scores]
        rows.append({"threshold": t, "sensitivity": _rate([c for y, c in called if y == pos]),
                     "specificity": _rate([not c for y, c in called if y != pos])})
    return {"positive": positive, "classes": classes, "rows": rows, "chosen": run.decision_threshold,
            "at_default": (metrics.get("binary") or {}).get(positive)}


def _rate(hits: list[bool]) -> dict:
    return rate(sum(hits), len(hits))


# --- reliability diagram: server-side SVG, like charts.py -------------------------------------

SIZE, PAD = 240, 34


def reliability_chart(reliability: dict | None) -> dict | None:
    """Squares per confidence bin (accuracy against mean confidence); the diagonal is perfect."""
    if not reliability or not reliability.get("bins"):
        return None
    span = SIZE - 2 * PAD

    def x(v):
        return round(PAD + v * span, 1)

    def y(v):
        return round(SIZE - PAD - v * span, 1)
    largest = max(b["count"] for b in reliability["bins"])
    points = [{"x": x(b["confidence"]), "y": y(b["accuracy"]), "r": round(3 + 6 * (b["count"] / largest) ** 0.5, 1),
               "title": f"{b['count']} image(s) with confidence {b['low']:.0%}–{b['high']:.0%}: "
                        f"mean confidence {b['confidence']:.0%}, right {b['accuracy']:.0%}"}
              for b in reliability["bins"]]
    return {"size": SIZE, "x0": x(0), "x1": x(1), "y0": y(0), "y1": y(1), "points": points,
            "line": " ".join(f"{p['x']},{p['y']}" for p in points), "ece": reliability["ece"], "n": reliability["n"],
            "ticks": [{"v": f"{t:.0%}", "x": x(t), "y": y(t)} for t in (0, 0.5, 1)]}
