"""What the results page (and the training report) shows of a run: charts, figures, mistakes."""

from django.urls import reverse
from django.utils import timezone

from transferapp.engine.zoo import get_base
from transferapp.library import selectors as library_selectors
from transferapp.models import TrainingRun
from transferapp.reporting import charts, trust
from transferapp.serving import exports
from transferapp.serving import heatmaps as serving_heatmaps
from transferapp.training import estimates
from transferapp.training import selectors as training_selectors


def results_context(run: TrainingRun, cell: str = "") -> dict:
    """Everything the finished results page shows; the training report (reports.py) renders it too."""
    context = _run_context(run)
    context.update(trust.run_context(run, cell=cell),
                   export=exports.export_status(run) if run.status == TrainingRun.Status.SUCCEEDED else None)
    return context


def _run_context(run: TrainingRun) -> dict:
    history = run.history or []
    metrics = run.metrics or {}
    classes = metrics.get("classes", run.classes)
    mistakes = metrics.get("mistakes", [])
    # Keys are image pks as text (the engine's keys); an image deleted since shows as a placeholder.
    pks = [int(m["key"]) if str(m["key"]).isdigit() else None for m in mistakes]
    images = library_selectors.images_by_pk(project=run.project, pks=[pk for pk in pks if pk is not None])
    return {
        "run": run,
        "project": run.project,
        "loss_chart": charts.line_chart(_series(history, "loss"), y_label="loss"),
        "accuracy_chart": charts.line_chart(_series(history, "accuracy"), y_max=1.0, y_label="accuracy"),
        "curve_chart": charts.learning_curve_chart(metrics.get("learning_curve")),
        "two_stages": len({row.get("stage") for row in history}) > 1,
        "confusion": charts.confusion_rows(metrics.get("confusion", []), classes),
        "per_class_rows": charts.per_class_rows(metrics.get("per_class", {}), classes),
        "base_label": _base_label(run.base_model),
        "mistakes": [{**m, "image": images.get(pk), "heatmaps": _mistake_heatmaps(run, classes, m, pk)}
                     for m, pk in zip(mistakes, pks)],
        "waiting_for_worker": run.status == TrainingRun.Status.QUEUED and not training_selectors.workers_online(),
        "time_left": estimates.time_left(run, timezone.now()),
        "settings_used": charts.settings_rows(run.config, metrics),
    }


def _mistake_heatmaps(run: TrainingRun, classes: list[str], mistake: dict, pk: int | None) -> list[dict]:
    """The gallery's heat-map choices: the wrong prediction first, then the true class."""
    if pk is None:
        return []
    return serving_heatmaps.choices(classes, [mistake["predicted"], mistake["true"]],
                            lambda i: reverse("run_image_heatmap", args=[run.pk, pk, i]))


def _base_label(name: str) -> str:
    try:
        return get_base(name).label
    except ValueError:
        return name


def _series(history: list[dict], metric: str) -> dict[str, list[float]]:
    return {
        f"train {metric}": [h[f"train_{metric}"] for h in history if h.get(f"train_{metric}") is not None],
        f"val {metric}": [h[f"val_{metric}"] for h in history if h.get(f"val_{metric}") is not None],
    }
