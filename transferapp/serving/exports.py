"""Exporting a model version as a bundle that runs without the app (engine/export.py does the work).

Synchronous: for EfficientNet-Lite0 the export plus its self-test took 2.0 s on 2 shared cores (manage.py
export_model on a flowers model, 20 samples), short enough to answer the button's POST directly.
"""
import json
import time
from collections import Counter
from pathlib import Path

from django.utils.text import slugify

from transferapp.audit import trail
from transferapp.engine.export import export_bundle
from transferapp.models import TrainingRun
from transferapp.storage import blobs, csvsafe
from transferapp.training.snapshot import take_snapshot

SAMPLES = 20


class ExportError(Exception):
    pass


def export_dir(run: TrainingRun) -> Path | None:
    return blobs.artifact_subfolder(run, "export")


def export_status(run: TrainingRun) -> dict | None:
    """The last export's outcome ({"passed", "report", "seconds"}), or None if never exported."""
    folder = export_dir(run)
    path = folder / "result.json" if folder is not None else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def bundle_zip(run: TrainingRun) -> Path | None:
    """The zip, only when its self-test passed."""
    status = export_status(run)
    if not (status and status["passed"]):
        return None
    path = export_dir(run) / "bundle.zip"
    return path if path.exists() else None


def model_info(run: TrainingRun) -> dict:
    return {"project": run.project.name, "version": run.version, "base": run.base_model}


def run_export(*, run: TrainingRun) -> dict:
    folder = blobs.artifact_folder(run) if run.status == TrainingRun.Status.SUCCEEDED else None
    if folder is None or not (folder / "meta.json").exists():
        raise ExportError("Only a finished training with its model files can be exported.")
    started = time.perf_counter()
    samples, counts_now = _validation_samples(run)
    counts = recorded_class_counts(run)
    name = f"{slugify(run.project.name) or 'model'}-v{run.version}"
    card = model_card(run, counts if counts is not None else counts_now, recorded=counts is not None)
    result = export_bundle(folder, folder / "export", name=name, samples=samples, model_info=model_info(run),
                           card=card, alpha=run.alpha)
    status = {"passed": result.passed, "report": result.report, "seconds": round(time.perf_counter() - started, 2),
              "name": name}
    (folder / "export" / "result.json").write_text(json.dumps(status))
    blobs.artifact_publish(run, "export")  # the bundle and its verdict, for every web process
    trail.record(action="export.made", project=run.project,
                 detail={"run": run.pk, "version": run.version, "passed": result.passed, "name": name})
    return status


def download_recorded(*, run: TrainingRun, what: str) -> None:
    """A model leaving the app ("model files", "export bundle") is an audit event (#26)."""
    trail.record(action="model.downloaded", project=run.project, detail={"run": run.pk, "version": run.version, "what": what})


def _validation_samples(run: TrainingRun) -> tuple[list[tuple[str, str]], dict]:
    """Up to SAMPLES of the run's own validation images (as the run recorded them; still present
    ones), spread over the classes."""
    snapshot = take_snapshot(run, local=False)  # storage names: only the chosen few are fetched
    val_keys = set(run.metrics.get("val_keys") or [])
    pool = [s for s in snapshot.samples if s.key in val_keys] or snapshot.samples
    by_class: dict[int, list] = {}
    for sample in pool:
        by_class.setdefault(sample.label, []).append(sample)
    chosen = []
    while len(chosen) < SAMPLES and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(chosen) < SAMPLES:
                chosen.append(by_class[label].pop(0))
    if len(chosen) < SAMPLES:  # a small project: top up from the training images
        chosen += [s for s in snapshot.samples if s not in chosen][:SAMPLES - len(chosen)]
    counts = Counter(snapshot.classes[s.label] for s in snapshot.samples)
    paths = blobs.media_paths([s.path for s in chosen])
    return [(s.key, str(path)) for s, path in zip(chosen, paths)], dict(counts)


def recorded_class_counts(run: TrainingRun) -> dict | None:
    """Images per class as the run saw them (its report/manifest.csv, written when it trained; test
    images, which trained nothing, left out), or None for a run that recorded none."""
    folder = blobs.artifact_subfolder(run, "report")
    path = folder / "manifest.csv" if folder is not None else None
    if path is None or not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as source:
        return dict(Counter(row["class"] for row in csvsafe.read_dicts(source) if row.get("role") != "test"))


def _scored(metrics: dict) -> int:
    return metrics.get("n_scored") or metrics.get("n_val", 0)


def _score(value) -> str:
    return "—" if value is None else f"{value:.2f}"  # None: no image of the class to measure it on


def model_card(run: TrainingRun, counts: dict, recorded: bool = True) -> str:
    """The bundle's README. `counts`: images per class as this version saw them (`recorded`), else
    the project's images today, and the card says so."""
    metrics = run.metrics or {}
    accuracy = metrics.get("accuracy")
    counted = "" if recorded else ("This version recorded no list of its images: these are the project's images "
                                   "at export time.")
    lines = [
        f"# {run.project.name}: model v{run.version}", "",
        f"Image classifier exported from transferapp: base network `{run.base_model}`, preset `{run.preset}`, "
        f"trained {run.finished_at:%Y-%m-%d %H:%M} UTC." if run.finished_at else "", "",
        "## What it was trained on", "",
        *[f"- {name}: {count} images" for name, count in sorted(counts.items())], *([counted] if counted else []), "",
        "## How well it did", "",
        (f"- Accuracy {accuracy:.1%} on {_scored(metrics)} {run.scored_images} images "
         f"(trained on {metrics.get('n_train', 0)})." if accuracy is not None else "- No figures."),
    ]
    for name, scores in (metrics.get("per_class") or {}).items():
        lines.append(f"- {name}: precision {_score(scores.get('precision'))}, recall {_score(scores.get('recall'))} "
                     f"({scores.get('support', 0)} {run.scored_images} images)")
    if (metrics.get("refit") or {}).get("note"):
        lines.append(f"- {metrics['refit']['note']}")
    lines += [
        "", "## Intended use and limitations", "",
        f"Sorting images into these {len(counts)} classes, for images like the training images. Where the app "
        "would say \"don't know\", so does `predict.py`: `abstained` is true when the model cannot rule out more than "
        "one class at the exported risk level (`prediction_set` lists them), or when the image is unlike the "
        "training images (`unfamiliar`: its features are farther from their nearest training images in "
        "`novelty_bank.npy` than the threshold in `config.json` → `novelty`; `prediction_set` is then empty and `top` "
        "only the closest class). Figures measured on few images are rough. Check it on your own images before "
        "relying on it.", "",
        "## How to run it", "",
        "```", "python -m pip install -r requirements.txt", "python predict.py photo.jpg other.png",
        "python predict.py --selftest   # proves it predicts what the app predicts", "```", "",
        "Each image prints one JSON line: `file`, `model`, `top`, `predictions` (every class, most likely first), "
        "`prediction_set`, `abstained`, `unfamiliar`.", "",
        "`model.onnx` input `pixels`: uint8, NCHW (batch, 3, crop, crop), RGB, resized and centre-cropped as "
        "`predict.py` does (see `config.json` → `preprocessing`); output `probabilities` (batch, classes) in the "
        "order of `labels.json`, and `features` (batch, features) for the novelty check. Normalisation, mirror "
        "averaging and softmax are inside the graph.", "",
        "`samples/` holds small copies of validation images, plus a solid grey square (`unfamiliar.png`), and "
        "`samples.json` the probabilities and answers the app computed for them; `--selftest` recomputes them here "
        "and fails unless every top label, prediction set, `abstained` and `unfamiliar` matches and no probability "
        "differs by more than 1e-4.", "",
    ]
    return "\n".join(lines)
