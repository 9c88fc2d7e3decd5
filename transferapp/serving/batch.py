"""Batch predictions as a CSV: many files, or zips of them, predicted with one model version.

A small batch is answered in the request (web.batches.predict_batch); a large one is stored by
serving.batch_runs.batch_create and predicted here by the worker (jobs.tasks.run_batch), a chunk at a time, into a
CSV and small thumbnails for the results table. The worker reads the inputs and writes the results
in local folders; blobs moves them to and from the bucket in bucket mode.
"""
import base64
import io
import json
import tempfile
import uuid
from pathlib import Path

from django.conf import settings

from transferapp.accounts import throttle
from transferapp.engine.data import IMAGE_SUFFIXES
from transferapp.library import images as library_images
from transferapp.library import intake
from transferapp.models import BatchPrediction
from transferapp.serving import predictions
from transferapp.serving import similar as serving_similar
from transferapp.storage import blobs, csvsafe
from transferapp.storage.archive import ArchiveRejected, Limits, ZipSource

# seen_in_training: the file is one the model learnt from, so its answer is no evidence of accuracy.
# similar: the training images most like it, "image id:class:similarity" joined by ";" (serving.similar).
CSV_COLUMNS = ["file", "label", "probability", "prediction_set", "abstained", "error", "seen_in_training", "similar"]
BATCH = 32  # images decoded and predicted together: bounded memory for any number of files
# ... or fewer, when they are large: 32 images at the 40-megapixel cap would hold ~4 GB decoded.
CHUNK_PIXELS = 100_000_000  # about 300 MB of decoded RGB
THUMB_PX = 96  # the results table shows them at 56 px; ~3 KB each
TABLE_ROWS = 100  # rows the finished batch's table shows (the CSV has them all)
ORDERS = {"file": "file order", "low": "least confident first", "high": "most confident first"}


def source_name(uploads: list) -> str:
    """What a batch is called (in its row, the prediction log): its file, or how many there were."""
    return uploads[0].name if len(uploads) == 1 else f"{len(uploads)} files"


def runs_in_worker(uploads: list) -> bool:
    """More than BATCH_INLINE_MAX_IMAGES loose images, or any zip (it may hold thousands)."""
    return len(uploads) > settings.BATCH_INLINE_MAX_IMAGES or any(u.name.lower().endswith(".zip") for u in uploads)


# --- reading the images: uploads (in the request) or the stored inputs (in the worker) ------------

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
        yield from zip_images(Path(spooled.name), upload.name)


def zip_images(path: Path, zip_name: str):
    """(name, bytes or an error) for each image in the zip; its folders are not classes here."""
    try:
        with ZipSource(path, Limits(max_member_bytes=library_images.max_upload_bytes()), loose=True) as source:
            for entry in source:
                if _is_image(entry):
                    yield entry.name, (entry.skip or _read(entry))
    except ArchiveRejected as exc:
        yield zip_name, str(exc)


def _is_image(entry) -> bool:
    return not entry.junk and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES


def _read(entry):
    try:
        return entry.read()
    except ValueError as exc:
        return str(exc)


def stored_images(inputs: Path):
    """(name, bytes or an error) for each image of a stored batch (its inputs folder, as
    serving.batch_runs.batch_create wrote it), one file in memory at a time."""
    for item in _manifest(inputs):
        if "error" in item:
            yield item["name"], item["error"]
        elif item["zip"]:
            yield from zip_images(inputs / item["path"], item["name"])
        else:
            yield item["name"], _stored_file(inputs / item["path"])


def _manifest(inputs: Path) -> list[dict]:
    """[{"name", "path", "zip"} or {"name", "error"}, ...]: each upload, or a file refused on arrival."""
    return json.loads((inputs / BatchPrediction.MANIFEST).read_text())


def _stored_file(path: Path):
    try:  # the upload cap of a batch request is the zip's: a loose file is checked before it is read
        intake.check_size(path.stat().st_size, library_images.max_upload_bytes())
    except intake.ImageRejected as exc:
        return str(exc)
    return path.read_bytes()


def count_stored(inputs: Path) -> int:
    """The number of CSV rows a stored batch will have (zips are opened, not unpacked)."""
    total = 0
    for item in _manifest(inputs):
        if not item.get("zip"):
            total += 1
            continue
        try:
            with ZipSource(inputs / item["path"], Limits(), loose=True) as source:
                total += sum(1 for entry in source if _is_image(entry))
        except ArchiveRejected:
            total += 1  # one error row for the whole zip
    return total


# --- predicting -----------------------------------------------------------------------------

def answered(run, images, size: int = BATCH, pixels: int = CHUNK_PIXELS, source=None):
    """Chunks of (API-shaped answer or {"file", "error"}, the checked image or None), in input
    order; a chunk ends at `size` files or `pixels` decoded pixels, whichever comes first. With
    `source` (a prediction_log.Source), each chunk's predictions are logged in one insert."""
    slots, held = [], 0
    for name, data in images:
        checked = _checked(data)
        slots.append((name, checked))
        held += 0 if isinstance(checked, str) else checked.rgb.width * checked.rgb.height
        if len(slots) == size or held >= pixels:
            yield _answer(run, slots, source)
            slots, held = [], 0
    if slots:
        yield _answer(run, slots, source)


def _checked(data):
    """The decoded image, or the reason it cannot be predicted (caps as for uploads)."""
    if isinstance(data, str):
        return data
    try:
        return intake.check_image(data, max_bytes=library_images.max_upload_bytes(), max_pixels=settings.MAX_IMAGE_PIXELS)
    except intake.ImageRejected as exc:
        return str(exc)


def _answer(run, slots, source=None) -> list[tuple[dict, object]]:
    good = [(name, checked) for name, checked in slots if not isinstance(checked, str)]
    answers = iter(predictions.predict_checked(run, good, similar=serving_similar.PAGE, source=source) if good else [])
    return [({"file": name, "error": checked}, None) if isinstance(checked, str) else (next(answers), checked)
            for name, checked in slots]


def predict_rows(run, images, sizes: list | None = None, source=None) -> list[dict]:
    """One API-shaped answer (or {"file", "error"}) per image, predicted BATCH at a time; each
    predicted image's pixel count is appended to `sizes` (the allowance counts by size); logged
    with `source`."""
    rows = []
    for chunk in answered(run, images, source=source):
        for row, checked in chunk:
            rows.append(row)
            if checked is not None and sizes is not None:
                sizes.append(checked.width * checked.height)
    return rows


def allowance_used(chunk) -> int:
    """What a chunk's predicted images count against the prediction allowance (by their size)."""
    return sum(throttle.image_weight(checked.width * checked.height) for _, checked in chunk if checked is not None)


def predict_stored(run, inputs: Path, results: Path, on_chunk, source=None) -> Path:
    """Predict a stored batch's inputs into a CSV and thumbnails in `results`; on_chunk(done,
    refused, images) after each chunk (progress, the allowance). Returns the CSV's path, written
    whole or not at all (under a name of this process's own: a silent earlier try may still write).
    With `source`, each chunk's predictions are logged as they are made."""
    thumbs = results / BatchPrediction.THUMBS
    thumbs.mkdir(parents=True, exist_ok=True)
    final = results / BatchPrediction.CSV
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    done = refused = 0
    try:
        with open(partial, "w", newline="", encoding="utf-8") as out:
            writer = csvsafe.dict_writer(out, CSV_COLUMNS)
            writer.writeheader()
            for chunk in answered(run, stored_images(inputs), source=source):
                for row, checked in chunk:
                    writer.writerow(csv_row(row))
                    if checked is not None:
                        (thumbs / f"{done}.jpg").write_bytes(intake.jpeg_thumbnail(checked.rgb, THUMB_PX, quality=80))
                    done += 1
                    refused += "error" in row
                out.flush()
                on_chunk(done, refused, allowance_used(chunk))
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)  # a batch that stopped leaves no piece of a CSV
    return final


def csv_row(row: dict) -> dict:
    if "error" in row:
        return {"file": row["file"], "error": row["error"]}
    return {"file": row["file"], "label": row["top"]["label"], "probability": f"{row['top']['probability']:.6f}",
            "prediction_set": ";".join(row["prediction_set"]), "abstained": row["abstained"],
            "seen_in_training": row.get("seen_in_training", False),
            "similar": ";".join(f"{s['image']}:{s['label']}:{s['similarity']:.4f}" for s in row.get("similar", []))}


def to_csv(rows) -> str:
    out = io.StringIO()
    writer = csvsafe.dict_writer(out, CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(row) for row in rows)
    return out.getvalue()


# --- the finished batch's table ---------------------------------------------------------------

def table_rows(batch: BatchPrediction, order: str) -> list[dict]:
    """The first TABLE_ROWS rows of the CSV in `order` (see ORDERS), each with its thumbnail (only
    those are fetched from the bucket in bucket mode, not the thousands of a large batch)."""
    (csv_file,) = blobs.stored_paths(batch.folder, [BatchPrediction.CSV])
    if not csv_file.exists():  # deleted after its retention time, a moment ago
        return []
    with open(csv_file, newline="", encoding="utf-8") as source:
        rows = [{**row, "index": i, "confidence": float(row["probability"] or -1)} for i, row in enumerate(csvsafe.read_dicts(source))]
    if order in ("low", "high"):
        rows.sort(key=lambda row: row["confidence"], reverse=order == "high")
    shown = rows[:TABLE_ROWS]
    predicted = [row for row in shown if not row["error"]]  # a refused file has no thumbnail
    thumbs = blobs.stored_paths(batch.folder, [f"{BatchPrediction.THUMBS}/{row['index']}.jpg" for row in predicted])
    for row, thumb in zip(predicted, thumbs):
        row["thumbnail"] = _thumbnail_uri(thumb)
    for row in shown:
        row["percent"] = round(100 * row["confidence"], 1)
        row["abstained"] = row["abstained"] == "True"
        row["seen_in_training"] = row.get("seen_in_training") == "True"
        row["prediction_set"] = row["prediction_set"].split(";") if row["prediction_set"] else []
        # An unfamiliar image abstains with an empty prediction set (a doubtful one with 2+ labels):
        # its label is then only the closest class.
        row["unfamiliar"] = row["abstained"] and not row["prediction_set"] and not row["error"]
        row["similar"] = _similar_cells(row.get("similar") or "")
    _live_similar(batch, shown)
    return shown


def _similar_cells(cell: str) -> list[dict]:
    """The CSV's similar cases back as {"image", "label", "similarity", "percent"} (a class name may hold ":")."""
    cases = []
    for part in filter(None, cell.split(";")):
        pk, _, rest = part.partition(":")
        label, _, similarity = rest.rpartition(":")
        try:
            cases.append({"image": int(pk), "label": label, "similarity": float(similarity)})
        except ValueError:
            continue
    return serving_similar.with_percent(cases)


def _live_similar(batch: BatchPrediction, rows: list[dict]) -> None:
    """Leaves out of the table's similar cases the images trashed or deleted since the batch ran."""
    wanted = {case["image"] for row in rows for case in row["similar"]}
    live = set(batch.project.images.filter(pk__in=wanted).values_list("pk", flat=True)) if wanted else set()
    for row in rows:
        row["similar"] = [case for case in row["similar"] if case["image"] in live]


def _thumbnail_uri(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode() if path.exists() else ""
