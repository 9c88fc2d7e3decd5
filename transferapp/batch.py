"""Batch predictions as a CSV: many files, or zips of them, predicted with one model version."""
import csv
import io
import tempfile
from pathlib import Path

from django.conf import settings

from transferapp import intake, predictions, services
from transferapp.archive import ArchiveRejected, Limits, ZipSource
from transferapp.engine.data import IMAGE_SUFFIXES

CSV_COLUMNS = ["file", "label", "probability", "prediction_set", "abstained", "error"]
BATCH = 32  # images decoded and predicted together: bounded memory for any number of files


def named_images(uploaded_files):
    """(name, bytes or an error) for each image among the uploads, zips unpacked (safely, see archive.py)."""
    for upload in uploaded_files:
        if upload.name.lower().endswith(".zip"):
            yield from _zip_members(upload)
        else:
            yield upload.name, upload.read()


def _zip_members(upload):
    with tempfile.NamedTemporaryFile(suffix=".zip") as spooled:
        for chunk in upload.chunks():
            spooled.write(chunk)
        spooled.flush()
        try:
            with ZipSource(Path(spooled.name), Limits(max_member_bytes=services.max_upload_bytes())) as source:
                for entry in source:
                    if entry.junk or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    yield entry.name, (entry.skip or _read(entry))
        except ArchiveRejected as exc:
            yield upload.name, str(exc)


def _read(entry):
    try:
        return entry.read()
    except ValueError as exc:
        return str(exc)


def predict_rows(run, images) -> list[dict]:
    """One API-shaped answer (or {"file", "error"}) per image, predicted BATCH at a time."""
    rows, pending = [], []
    for name, data in images:
        if isinstance(data, str):
            rows.append({"file": name, "error": data})
            continue
        try:
            pending.append((name, intake.check_image(data, max_bytes=services.max_upload_bytes(),
                                                     max_pixels=settings.MAX_IMAGE_PIXELS)))
        except intake.ImageRejected as exc:
            rows.append({"file": name, "error": str(exc)})
        if len(pending) == BATCH:
            rows += predictions.predict_checked(run, pending)
            pending = []
    return rows + (predictions.predict_checked(run, pending) if pending else [])


def to_csv(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
        if "error" in row:
            writer.writerow({"file": row["file"], "error": row["error"]})
        else:
            writer.writerow({"file": row["file"], "label": row["top"]["label"],
                             "probability": f"{row['top']['probability']:.6f}",
                             "prediction_set": ";".join(row["prediction_set"]), "abstained": row["abstained"]})
    return out.getvalue()
