"""The training report: one self-contained page per model version (HTML, and the same page as a
PDF) that a reader can file, show a colleague or cite. It follows the model-card habit (Hugging
Face model cards; Mitchell et al. 2019): intended use, data, model, results, provenance.

What the run used is recorded when it trains (record_provenance: the image manifest, library
versions, hardware, the base weights' hash), so the report stays true after images are added,
moved or deleted. A run trained before that has its manifest rebuilt from the images as they are
now, and the report says so.
"""
import base64
import hashlib
import io
import json
import logging
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import django
from django.conf import settings
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.utils import timezone

from transferapp.engine.features import file_digest
from transferapp.engine.zoo import weights_file
from transferapp.library import readiness
from transferapp.models import Image, TrainingRun
from transferapp.reporting.results import results_context
from transferapp.serving import exports
from transferapp.storage import blobs, csvsafe

MANIFEST_FIELDS = ["image_id", "file_name", "class", "role", "sha256"]
ROLE_NAMES = {"train": "training", "validation": "validation", "test": "test"}
MISTAKES_SHOWN = 60  # thumbnails in the misclassified gallery; the count says how many there were
CELL_THUMBS = 4  # thumbnails per mix-up cell of the confusion matrix
EXAMPLES_PER_CLASS = 6


class ReportUnavailable(Exception):
    pass


# --- recorded at training time ------------------------------------------------------------------

def report_dir(run: TrainingRun) -> Path | None:
    return blobs.artifact_subfolder(run, "report")


def record_provenance(*, out_dir: Path, classes: list[str], parts: dict[str, list], base: str) -> None:
    """Write what the run used beside its model: manifest.csv (every image, its class and role as
    the run saw them, its SHA-256) and provenance.json (code and library versions, hardware, the
    base weights' hash). `parts` maps a role ("train", "validation", "test") to engine Samples."""
    seen = {s.key: (role, classes[s.label]) for role, samples in parts.items() for s in samples}
    rows = Image.all_objects.filter(pk__in=[int(k) for k in seen if k.isdigit()]).order_by("pk")
    manifest = [[str(pk), _shown_name(name, file), seen[str(pk)][1], seen[str(pk)][0], sha]
                for pk, name, file, sha in rows.values_list("pk", "original_name", "file", "sha256")]
    folder = Path(out_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text(_csv(manifest))
    facts = {"code_version": code_version(), "versions": library_versions(), "hardware": hardware(),
             "base_weights_sha256": _weights_digest(base), "recorded_at": timezone.now().isoformat()}
    (folder / "provenance.json").write_text(json.dumps(facts, indent=2))


def _shown_name(original_name: str, stored_file: str) -> str:
    """A DICOM file's name is often the patient's name or accession number: left out, like every
    other patient field (the image id identifies the row)."""
    return "" if stored_file.lower().endswith((".dcm", ".dicom")) else original_name


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csvsafe.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_FIELDS)
    writer.writerows(rows)
    return out.getvalue()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit when the code runs from a checkout."""
    version = metadata.version("transferapp")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=settings.BASE_DIR, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit}" if commit else version


def library_versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision
    return {"python": platform.python_version(), "django": django.get_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__}


def hardware() -> dict:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cpu": _cpu_model() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "system": f"{platform.system()} {platform.release()}"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _weights_digest(base: str) -> str:
    try:
        path = weights_file(base)
    except ValueError:
        return ""
    if not path.exists():
        return ""
    stat = path.stat()
    return _digest_of(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    """A weights file (20-110 MB) is hashed once per version of the file in each worker, not after
    every training; the cache key changes when the file does."""
    return file_digest(path)


# --- read back ------------------------------------------------------------------------------------

def manifest(run: TrainingRun) -> tuple[str, bool]:
    """(the manifest CSV, whether it was recorded by the run). Older runs: rebuilt from the images
    as they are now, with roles from what the run recorded (its validation and evaluation keys)."""
    path = report_dir(run) / "manifest.csv" if run.artifact_dir else None
    if path and path.exists():
        # One recorded before names were quoted: quoted now (its report ID changes only if it had to be).
        return csvsafe.harden(path.read_text(), lineterminator="\n"), True
    metrics = run.metrics or {}
    roles = {key: "validation" for key in metrics.get("val_keys") or []}
    if metrics.get("evaluated_on") == "test":
        roles.update({k: "test" for row in metrics.get("confusion_keys") or [] for cell in row for k in cell})
    images = Image.objects.filter(project=run.project).order_by("pk").values_list("pk", "original_name", "file", "label__name", "sha256")
    rows = [[str(pk), _shown_name(name, file), label, roles.get(str(pk), "train" if roles else ""), sha]
            for pk, name, file, label, sha in images]
    return _csv(rows), False


def provenance(run: TrainingRun) -> tuple[dict, bool]:
    """(versions, hardware and weights hash, whether the run recorded them). Older runs: the
    versions the model file names, the rest left blank rather than guessed."""
    path = report_dir(run) / "provenance.json" if run.artifact_dir else None
    if path and path.exists():
        return json.loads(path.read_text()), True
    meta_path = blobs.artifact_folder(run) / "meta.json" if run.artifact_dir else None
    versions = json.loads(meta_path.read_text()).get("versions", {}) if meta_path and meta_path.exists() else {}
    return {"code_version": "", "versions": versions, "hardware": {}, "base_weights_sha256": ""}, False


def report_id(run: TrainingRun, manifest_csv: str, facts: dict) -> str:
    """A hash of the image manifest, the configuration and the code version: the same training on
    the same images with the same code has the same ID."""
    payload = json.dumps({
        "manifest": hashlib.sha256(manifest_csv.encode()).hexdigest(),
        "config": {"requested": run.config, "resolved": (run.metrics or {}).get("config"), "base": run.base_model,
                   "preset": run.preset, "classes": (run.metrics or {}).get("classes", run.classes)},
        "code": facts.get("code_version") or "",
    }, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:20].upper()
    return "-".join(digest[i:i + 5] for i in range(0, 20, 5))


# --- the page -------------------------------------------------------------------------------------

def reportable_run(run: TrainingRun) -> TrainingRun:
    if run.status != TrainingRun.Status.SUCCEEDED or not run.version:
        raise ReportUnavailable("Only a finished version (a succeeded training) has a training report.")
    return run


def report_context(run: TrainingRun) -> dict:
    reportable_run(run)
    manifest_csv, recorded = manifest(run)
    facts, facts_recorded = provenance(run)
    rows = list(csvsafe.read_dicts(manifest_csv))  # the names as given, for the counts and examples
    context = results_context(run)
    metrics = run.metrics or {}
    context.update(
        report={
            # The version that trained the model (what the ID hashes), not the one rendering the page.
            "id": report_id(run, manifest_csv, facts), "code_version": facts.get("code_version") or code_version(),
            "rendered_with": code_version(),
            "manifest_recorded": recorded, "facts_recorded": facts_recorded, "facts": facts,
            "versions": facts.get("versions", {}),
            "manifest_sha256": hashlib.sha256(manifest_csv.encode()).hexdigest(), "manifest_rows": len(rows),
            "manifest_uri": "data:text/csv;base64," + base64.b64encode(manifest_csv.encode()).decode(),
            "counts": _counts(rows, metrics.get("classes", run.classes)), "checks": _checks(run, rows),
            "seed": (metrics.get("config") or run.config or {}).get("seed"),
            "frozen": _frozen(run), "author": report_author(run.project),
            "affiliation": run.project.report_affiliation,
            "mistakes_shown": context["mistakes"][:MISTAKES_SHOWN],
            "mixups": _mixups(run, context), "examples": _examples(run, rows),
            "export": _export(run), "css": _css(),
        },
    )
    return context


def _counts(rows: list[dict], classes: list[str]) -> dict:
    roles = [r for r in ROLE_NAMES if any(row["role"] == r for row in rows)]
    table = [{"name": name, "cells": [sum(1 for row in rows if row["class"] == name and row["role"] == r) for r in roles],
              "total": sum(1 for row in rows if row["class"] == name)} for name in classes]
    return {"roles": [ROLE_NAMES[r] for r in roles], "rows": table,
            "totals": [sum(1 for row in rows if row["role"] == r) for r in roles], "total": len(rows)}


def _checks(run: TrainingRun, rows: list[dict]) -> list[dict]:
    """Leakage between roles, read from the manifest: near-identical images (the project's
    near-duplicate groups, as they are now) used both to train and to judge the model flatter its
    figures. Identical bytes cannot: a project holds each file once (the upload refuses a copy)."""
    role = {row["image_id"]: row["role"] for row in rows}
    crossing = [group for group in readiness.near_duplicate_images(project=run.project)
                if len({role.get(str(image.pk)) for image in group if str(image.pk) in role}) > 1]
    return [
        {"name": "Identical files", "ok": True, "text": "none possible: a project stores each file's bytes once"},
        {"name": "Near-identical images on both sides (training and evaluation)", "ok": not crossing,
         "text": "none" if not crossing else f"{len(crossing)} group(s): images "
                 + "; ".join(", ".join(str(image.pk) for image in group) for group in crossing[:5])},
    ]


def _frozen(run: TrainingRun) -> str:
    metrics = run.metrics or {}
    blocks = (metrics.get("config") or {}).get("unfrozen_blocks", run.config.get("unfrozen_blocks"))
    depth = metrics.get("depth") or {}
    also = (" Its answers are averaged with those of the quick model (the frozen body and a new top layer), "
            "which kept the fine-tuning and the quick model both.") if metrics.get("chosen_stage") == "ensemble" else ""
    if metrics.get("chosen_stage") in ("finetune", "ensemble") and depth.get("first_trained_stage") == 0:
        return ("Nothing was frozen: every layer of the pretrained body was fine-tuned together with a new top layer "
                "for these classes, the early layers at lower learning rates." + also)
    if metrics.get("chosen_stage") in ("finetune", "ensemble"):
        if depth:  # runs since depth was chosen record how many blocks trained
            blocks = depth["stages"] - 1 - depth["first_trained_stage"]
        trained = "its final layer" if blocks == 0 else f"its top {blocks} block{'s' if blocks != 1 else ''} and its final layer"
        return (f"The pretrained body was frozen except {trained}, fine-tuned together with a new top layer for "
                "these classes." + also)
    return "The whole pretrained body was frozen; only a new top layer (linear, on its pooled features) was trained."


def _mixups(run: TrainingRun, context: dict) -> list[dict]:
    """Off-diagonal cells of the confusion matrix with a few of their images."""
    metrics = run.metrics or {}
    keys, classes = metrics.get("confusion_keys") or [], metrics.get("classes", run.classes)
    wanted = [int(k) for t, row in enumerate(keys) for p, cell in enumerate(row) if t != p for k in cell[:CELL_THUMBS]
              if str(k).isdigit()]
    images = {image.pk: image for image in Image.objects.filter(project=run.project, pk__in=wanted)}
    cells = []
    for t, row in enumerate(keys):
        for p, cell in enumerate(row):
            if t != p and cell:
                shown = [images[int(k)] for k in cell[:CELL_THUMBS] if str(k).isdigit() and int(k) in images]
                cells.append({"true": classes[t], "predicted": classes[p], "count": len(cell), "images": shown})
    return cells


def _examples(run: TrainingRun, rows: list[dict]) -> list[dict]:
    """A few images of each class, so a reader sees what the classes look like."""
    picked: dict[str, list[int]] = {}
    for row in rows:
        if row["image_id"].isdigit() and len(picked.setdefault(row["class"], [])) < EXAMPLES_PER_CLASS:
            picked[row["class"]].append(int(row["image_id"]))
    images = Image.objects.filter(project=run.project).in_bulk([pk for pks in picked.values() for pk in pks])
    return [{"name": name, "images": [images[pk] for pk in pks if pk in images]} for name, pks in picked.items()]


def _export(run: TrainingRun) -> dict | None:
    """The export bundle's self-test and each file's SHA-256, where one was made."""
    status = exports.export_status(run)
    if status is None:
        return None
    folder = exports.export_dir(run) / "bundle"
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return {**status, "files": [{"name": str(p.relative_to(folder)), "sha256": file_digest(p)} for p in files]}


def report_author(project) -> str:
    """Who the citation names: the authors the owner gave, else the account's full name, else its username."""
    return project.report_authors or project.owner.get_full_name() or project.owner.get_username()


def _css() -> str:
    """The app's own stylesheet, inlined: the page must open with no server behind it."""
    path = finders.find("transferapp/app.css")
    return Path(path).read_text() if path else ""


def thumbnail_uri(image) -> str:
    """A stored thumbnail (JPEG, rendered from the pixels only: no DICOM tag) as a data: URI."""
    field = image.thumbnail
    if not field:
        return ""
    try:
        with field.open("rb") as f:
            return "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
    except (FileNotFoundError, ValueError):
        return ""


def render_html(run: TrainingRun) -> str:
    return render_to_string("transferapp/report.html", report_context(run))


# Tagged PDF (a structure tree of headings, paragraphs, tables and images' alt text, and
# MarkInfo/Marked): what screen readers read. Not the full PDF/UA-1 variant, which WeasyPrint
# calls experimental and which also demands things of the page it cannot check.
PDF_OPTIONS = {"pdf_tags": True}


def render_pdf(run: TrainingRun, html: str | None = None) -> bytes:
    """The same page through WeasyPrint, the manifest attached; cached beside the model, keyed by
    the page's own hash (the report ID alone would miss edits such as the intended-use text)."""
    html = html if html is not None else render_html(run)
    # The options are part of the key: a PDF cached before they changed (untagged) is made again.
    digest = hashlib.sha256((html + repr(PDF_OPTIONS)).encode()).hexdigest()[:16]
    # No artifact folder (a run from before artifacts, or a test row): nothing to cache beside, and
    # Path("") / "report" would be the working directory.
    cached = report_dir(run) / f"report-{digest}.pdf" if run.artifact_dir else None
    if cached is not None and cached.exists():
        return cached.read_bytes()
    from PIL import ImageFile

    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    from weasyprint import HTML, Attachment
    from weasyprint.urls import URLFetcher

    # Importing WeasyPrint sets Pillow's process-wide LOAD_TRUNCATED_IMAGES: afterwards this web
    # process would accept truncated uploads as images. Its own images here are our data: URIs.
    ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok

    # The app's stylesheet holds screen rules WeasyPrint skips, one warning each: not news for a log.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    # data: URIs only: the report reaches neither the network nor the disk.
    fetcher = URLFetcher(allowed_protocols={"data"})
    manifest_csv, _ = manifest(run)
    pdf = HTML(string=html, url_fetcher=fetcher).write_pdf(**PDF_OPTIONS, attachments=[
        Attachment(string=manifest_csv.encode(), url_fetcher=fetcher, name="manifest.csv", description="Image manifest")])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        for old in cached.parent.glob("report-*.pdf"):
            old.unlink(missing_ok=True)
        cached.write_bytes(pdf)
        blobs.artifact_publish(run, "report", prune=True)  # the other web processes' cache, too
    return pdf


def file_name(run: TrainingRun, suffix: str) -> str:
    from django.utils.text import slugify
    return f"{slugify(run.project.name) or 'model'}-v{run.version}-report.{suffix}"

