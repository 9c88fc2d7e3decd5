"""Labels from a file (#24): a CSV (`file,label` with a header row) or a JSON list
(`[{"file": ..., "label": ...}]`) beside the images of a zip or folder, as Kaggle-style and hospital
exports come. Each row names a file (its path inside the import, or its base name when only one
file has it) and its class; a file with no row goes to the Inbox."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from transferapp.storage.archive import (
    LABEL_FILE_SUFFIXES,
    ArchiveRejected,
    find_labels_file,
)

FILE_COLUMNS = ("file", "filename", "image")
LABEL_COLUMNS = ("label", "class")
MAX_LABELS_FILE_BYTES = 20 * 1024**2


class LabelsFileError(ArchiveRejected):
    """The labels file cannot be read; the message names the file, the line and why."""


@dataclass
class LabelRow:
    line: int  # the CSV line (1 = the header) or the JSON list's item (1 = the first)
    file: str
    label: str  # "" : the file is named but has no class yet (it goes to the Inbox)


def read_labels(name: str, data: bytes) -> list[LabelRow]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelsFileError(f"{name}: the file is not UTF-8 text.") from None
    rows = _read_json(name, text) if name.lower().endswith(".json") else _read_csv(name, text)
    _refuse_contradictions(name, rows)
    return rows


def _read_csv(name: str, text: str) -> list[LabelRow]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise LabelsFileError(f"{name} line 1: the header row is missing (expected for example “file,label”).")
    delimiter = max(",;\t", key=lines[0].count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = [cell.strip().lower() for cell in next(reader)]
        file_at, label_at = _column(name, header, FILE_COLUMNS), _column(name, header, LABEL_COLUMNS)
        return [row for row in (_csv_row(name, reader.line_num, cells, file_at, label_at) for cells in reader) if row]
    except csv.Error as exc:
        raise LabelsFileError(f"{name} line {reader.line_num}: {exc}.") from None


def _column(name: str, header: list[str], wanted: tuple[str, ...]) -> int:
    for column in wanted:
        if column in header:
            return header.index(column)
    raise LabelsFileError(f"{name} line 1: the header needs a column called {' or '.join(wanted)}; "
                          f"it has: {', '.join(header) or 'nothing'}.")


def _csv_row(name: str, line: int, cells: list[str], file_at: int, label_at: int) -> LabelRow | None:
    if not any(cell.strip() for cell in cells):
        return None  # a blank line
    if len(cells) <= max(file_at, label_at):
        raise LabelsFileError(f"{name} line {line}: {len(cells)} column(s), but the header has {max(file_at, label_at) + 1} or more.")
    if not cells[file_at].strip():
        raise LabelsFileError(f"{name} line {line}: the file name is empty.")
    return LabelRow(line=line, file=cells[file_at].strip(), label=cells[label_at].strip())


def _read_json(name: str, text: str) -> list[LabelRow]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsFileError(f"{name} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    if not isinstance(items, list):
        raise LabelsFileError(f"{name}: expected a list of {{\"file\": ..., \"label\": ...}} objects.")
    return [_json_row(name, number, item) for number, item in enumerate(items, start=1)]


def _json_row(name: str, number: int, item) -> LabelRow:
    file = next((item[key] for key in FILE_COLUMNS if isinstance(item, dict) and key in item), None)
    label = next((item[key] for key in LABEL_COLUMNS if isinstance(item, dict) and key in item), "")
    if isinstance(label, int | float) and not isinstance(label, bool):
        label = str(label)  # grades exported as numbers (KL 0-4)
    if not isinstance(file, str) or not file.strip() or not isinstance(label, (str, type(None))):
        raise LabelsFileError(f"{name} item {number}: expected {{\"file\": \"name.jpg\", \"label\": \"class\"}}.")
    return LabelRow(line=number, file=file.strip(), label=(label or "").strip())


def _refuse_contradictions(name: str, rows: list[LabelRow]) -> None:
    seen: dict[str, LabelRow] = {}
    for row in rows:
        earlier = seen.setdefault(_normal(row.file), row)
        if earlier is not row and earlier.label != row.label:
            raise LabelsFileError(f"{name} line {row.line}: “{row.file}” is labelled “{row.label}” here but "
                                  f"“{earlier.label}” on line {earlier.line}.")


def _normal(path: str) -> str:
    return path.replace("\\", "/").removeprefix("./").strip("/")


class LabelMap:
    """Which class each file of the import gets, from the labels file's rows."""

    def __init__(self, source_name: str, rows: list[LabelRow], names: list[str]):
        self.source_name = source_name
        folder = str(PurePosixPath(source_name).parent)
        relative = {n: (n[len(folder) + 1:] if folder != "." and n.startswith(folder + "/") else n) for n in names}
        by_base: dict[str, list[str]] = {}
        for n in names:
            by_base.setdefault(PurePosixPath(n).name, []).append(n)
        self.labels: dict[str, LabelRow] = {}
        self.missing: list[LabelRow] = []
        by_path = {**{rel: n for n, rel in relative.items()}, **{n: n for n in names}}
        for row in rows:
            wanted = _normal(row.file)
            found = by_path.get(wanted) or _only(by_base.get(PurePosixPath(wanted).name, []))
            if found is None:
                self.missing.append(row)
            else:
                self.labels.setdefault(found, row)
        classes_by_folder: dict[str, set[str]] = {}
        for found, row in self.labels.items():
            if row.label:
                classes_by_folder.setdefault(str(PurePosixPath(found).parent), set()).add(row.label.lower())
        # A folder the rows split into several classes (images/ of a Kaggle export) is no class folder.
        self.mixed_folders = {folder for folder, classes in classes_by_folder.items() if len(classes) > 1}

    def row_for(self, name: str) -> LabelRow | None:
        return self.labels.get(name)

    def folder_is_mixed(self, name: str) -> str | None:
        """The folder of this file when the rows give its files several classes (so it is no class)."""
        folder = str(PurePosixPath(name).parent)
        return folder if folder in self.mixed_folders else None

    def is_labels_file(self, name: str) -> bool:
        """The labels file itself, also when it lies in the folder that `--labels` named."""
        return name == self.source_name or (
            name.lower().endswith(LABEL_FILE_SUFFIXES) and PurePosixPath(name).name == PurePosixPath(self.source_name).name)


def _only(candidates: list[str]) -> str | None:
    return candidates[0] if len(candidates) == 1 else None  # a base name two files share matches neither


def labels_for_source(source, *, labels_path=None) -> LabelMap | None:
    """The import's LabelMap: from `labels_path` (a file on the server, for manage.py import_images)
    or from the labels file inside the zip or folder; None when there is none."""
    names = source.names()
    if labels_path is not None:
        with open(labels_path, "rb") as f:
            data = f.read(MAX_LABELS_FILE_BYTES + 1)
        return LabelMap(str(labels_path), _checked_rows(str(labels_path), data), names)
    found = find_labels_file(names)
    if found is None:
        return None
    try:
        data = source.read_named(found, MAX_LABELS_FILE_BYTES)
    except (ValueError, OSError) as exc:
        raise LabelsFileError(f"{found}: {exc}") from None
    if not _looks_like_labels(found, data):
        return None  # notes or metadata that came along: reported as a file that is no image, as before
    return LabelMap(found, _checked_rows(found, data), names)


def _looks_like_labels(name: str, data: bytes) -> bool:
    """A CSV whose header names a file column and a label column, or a JSON list: what a labels file
    is. Anything else at the top of a zip (a README table, COCO-style metadata) is not taken for one,
    so it cannot stop an import that would have worked without it."""
    text = data[:4096].decode("utf-8-sig", errors="replace").lstrip()
    if name.lower().endswith(".json"):
        return text.startswith("[")
    first = text.splitlines()[0] if text else ""
    header = {cell.strip().strip('"').lower() for cell in first.replace(";", ",").replace("\t", ",").split(",")}
    return bool(header & set(FILE_COLUMNS)) and bool(header & set(LABEL_COLUMNS))


def _checked_rows(name: str, data: bytes) -> list[LabelRow]:
    if len(data) > MAX_LABELS_FILE_BYTES:
        raise LabelsFileError(f"{name}: larger than {MAX_LABELS_FILE_BYTES // 1024**2} MB; is it really a labels file?")
    return read_labels(PurePosixPath(name).name, data)
