"""The monitoring figures of a published model (#25), for the monitoring page and the API: what the
prediction log says about a period (the last `days` days, today included).

Counts are the database's (grouped by day and source); the distributions (confidence, novelty)
read one or two columns of the period's rows, never the images or their features (drift.py reads
those, for this week only and bounded).
"""
from __future__ import annotations

import statistics
from datetime import timedelta

import numpy as np
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from transferapp.models import Prediction, Project
from transferapp.reporting import drift
from transferapp.reporting.live_accuracy import intervals_disagree, live_accuracy
from transferapp.serving.exports import recorded_class_counts
from transferapp.training import selectors as training_selectors

PERIODS = (7, 30, 90)  # the page's choices; the API takes any number of days up to MAX_DAYS
DEFAULT_DAYS = 30
MAX_DAYS = 365
CONFIDENCE_BINS = 10
SOURCES = [choice.value for choice in Prediction.Source]


def period_start(days: int, now=None):
    """Midnight (UTC) `days - 1` days before today: a period of 7 days is today and the 6 before."""
    now = now or timezone.now()
    return (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)


def monitoring(project: Project, days: int = DEFAULT_DAYS, now=None) -> dict:
    """Everything the page and `GET /api/v1/projects/{id}/monitoring` show; plain JSON-ready values."""
    now = now or timezone.now()
    since = period_start(days, now)
    rows = Prediction.objects.filter(project=project, created_at__gte=since, created_at__lte=now)
    count = rows.count()
    served = training_selectors.model_run(project=project)
    return {
        "days": days, "since": since.date().isoformat(), "until": now.date().isoformat(),
        "predictions": count,
        "version": served.version if served else None,
        "novelty_threshold": drift.novelty_threshold(served) if served else None,
        "by_day": by_day(rows, since, now),
        "sources": dict(_counts(rows, "source")),
        "class_mix": class_mix(rows, served),
        "confidence": confidence_histogram(rows) if count else {"bins": [0] * CONFIDENCE_BINS, "median": None},
        "abstained_rate": round(rows.filter(abstained=True).count() / count, 4) if count else None,
        "drift": drift.drift_report(project, now),
        "reviews": reviews(project, since, now),
        "live_accuracy": live_accuracy(project, since),
        "validation": validation_figure(served),
    }


def _counts(rows, field: str) -> list[tuple[str, int]]:
    return [(row[field], row["n"]) for row in rows.values(field).annotate(n=Count("pk")).order_by(field)]


def by_day(rows, since, now) -> list[dict]:
    """One entry per day of the period (days with nothing logged too): predictions by source, the
    "don't know" rate, the median confidence and the novelty score's median and share over the threshold."""
    days = [(since + timedelta(days=i)).date() for i in range((now.date() - since.date()).days + 1)]
    out = {day: {"day": day.isoformat(), **{source: 0 for source in SOURCES}, "total": 0, "abstained": 0,
                 "abstained_rate": None, "confidence_median": None, "novelty_median": None, "novelty_p10": None,
                 "novelty_p90": None, "unlike_share": None}
           for day in days}
    counted = rows.annotate(day=TruncDate("created_at")).values("day", "source", "abstained").annotate(n=Count("pk"))
    for row in counted:
        entry = out.get(row["day"])
        if entry is None:
            continue
        entry[row["source"]] = entry.get(row["source"], 0) + row["n"]
        entry["total"] += row["n"]
        entry["abstained"] += row["n"] if row["abstained"] else 0
    confidences, novelties, unlike = {}, {}, {}
    for created, probability, novelty, unfamiliar in rows.values_list("created_at", "probability", "novelty", "unfamiliar"):
        day = timezone.localtime(created).date()
        confidences.setdefault(day, []).append(probability)
        if novelty is not None:
            novelties.setdefault(day, []).append(novelty)
            unlike.setdefault(day, []).append(unfamiliar)
    for day, entry in out.items():
        if entry["total"]:
            entry["abstained_rate"] = round(entry["abstained"] / entry["total"], 4)
        if confidences.get(day):
            entry["confidence_median"] = round(statistics.median(confidences[day]), 4)
        if novelties.get(day):
            low, median, high = np.quantile(novelties[day], [0.1, 0.5, 0.9])
            entry.update(novelty_median=round(float(median), 4), novelty_p10=round(float(low), 4),
                         novelty_p90=round(float(high), 4))
            entry["unlike_share"] = round(sum(unlike[day]) / len(unlike[day]), 4)
    return list(out.values())


def class_mix(rows, served) -> list[dict]:
    """Per class: the predictions' top labels against the images the served version trained on
    (its recorded counts; None where the version recorded none)."""
    predicted = dict(_counts(rows, "top_label"))
    training = (recorded_class_counts(served) if served is not None else None) or {}
    total_predicted, total_training = sum(predicted.values()), sum(training.values())
    names = list(served.classes if served is not None and served.classes else []) or sorted(training)
    names += sorted(name for name in predicted if name not in names)
    return [{"label": name, "predicted": predicted.get(name, 0),
             "predicted_share": round(predicted.get(name, 0) / total_predicted, 4) if total_predicted else None,
             "training": training.get(name) if training else None,
             "training_share": round(training.get(name, 0) / total_training, 4) if total_training else None}
            for name in names]


def confidence_histogram(rows) -> dict:
    """How sure the answers were: the top class's probability in CONFIDENCE_BINS bins from 0 to 1."""
    values = list(rows.values_list("probability", flat=True))
    bins = [0] * CONFIDENCE_BINS
    for value in values:
        bins[min(max(int(value * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)] += 1
    return {"bins": bins, "median": round(statistics.median(values), 4) if values else None}


def reviews(project: Project, since, now) -> dict:
    """Reviews given in the period, by where they came from: the review queue or the feedback API."""
    counts = dict(Prediction.objects.filter(project=project, reviewed_at__gte=since, reviewed_at__lte=now)
                  .exclude(review_label="").values_list("review_source").annotate(n=Count("pk")))
    return {"queue": counts.get(Prediction.ReviewSource.QUEUE, 0), "api": counts.get(Prediction.ReviewSource.API, 0)}


def validation_figure(run) -> dict | None:
    """The served version's accuracy on its validation (or test) images, with its interval, for
    live accuracy to stand beside."""
    if run is None:
        return None
    metrics = run.metrics or {}
    interval = metrics.get("accuracy_ci")
    return {"version": run.version, "accuracy": metrics.get("accuracy"), "n": metrics.get("n_scored"),
            "interval": list(interval) if interval else None}


def live_warning(figures: dict) -> bool:
    """True when the served version's live accuracy interval and its validation interval do not overlap."""
    validation = figures.get("validation") or {}
    live = next((row for row in figures["live_accuracy"] if row["version"] == validation.get("version")), None)
    return bool(live) and intervals_disagree(live["interval"], validation.get("interval"))
