"""No CSV the app writes holds a cell a spreadsheet would run as a formula (OWASP's CSV injection):
batch predictions (in the request and by the worker) and the report's manifest (download, the
HTML report's link, the PDF's attachment). The app's own pages still show the names as given."""
import base64
import csv
import html
import io
import re
from pathlib import Path

import pytest
from django.core.cache import cache
from django.urls import reverse

from tests.api_support import photo_bytes, photo_project, train_version
from tests.factories import upload
from tests.serving.test_batch import poll_while_the_worker_runs, send_batch, zip_of
from transferapp.library import projects as library_projects
from transferapp.reporting import reports as reporting_reports
from transferapp.storage import csvsafe

pytestmark = pytest.mark.django_db(transaction=True)

EVIL_FILE = '=HYPERLINK("evil.example","y").png'  # no slash: an uploaded file's name is its last path part
EVIL_CLASS = "+cmd"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


def runnable_cells(text: str) -> list[str]:
    """Cells a spreadsheet would take for a formula: they start with = + - @, a tab or a CR and are not numbers."""
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row
            if cell.startswith(FORMULA_STARTS) and not re.fullmatch(r"-?\d+(\.\d+)?", cell)]


@pytest.fixture
def trained_with_formula_names(alice, user, queue):
    """A class named like a formula holding an image uploaded (through the page) under a formula's name."""
    project = photo_project(user, per_class=6)
    sea = project.labels.get(name="sea")
    library_projects.label_rename(label=sea, name=EVIL_CLASS)
    response = alice.post(reverse("label_upload", args=[project.pk, sea.pk]),
                          {"files": [upload(EVIL_FILE, photo_bytes("sea", 77), "image/jpeg")]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.json()["files"][0] == {**response.json()["files"][0], "name": EVIL_FILE, "status": "added"}
    return project, train_version(project)


def test_batch_csvs_and_the_report_manifest_quote_formula_names_and_keep_numbers(alice, trained_with_formula_names, tmp_path):
    project, run = trained_with_formula_names
    sea_photo = photo_bytes("sea", 78)

    # In the request: a few loose images.
    inline = alice.post(reverse("predict_batch", args=[project.pk]), {"files": [upload(EVIL_FILE, sea_photo, "image/jpeg")]})
    assert inline.status_code == 200 and inline["Content-Type"].startswith("text/csv")
    text = inline.content.decode()
    assert runnable_cells(text) == [], text
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["file"] == "'" + EVIL_FILE and row["label"] == "'" + EVIL_CLASS
    assert 0 < float(row["probability"]) <= 1  # a number stays a number

    # By the worker: a zip, its members' names as the zip gives them.
    batch = send_batch(alice, project, [upload("shots.zip", zip_of([(EVIL_FILE, sea_photo), ("-1+1.jpg", sea_photo + b"")]),
                                               "application/zip")])
    poll_while_the_worker_runs(alice, batch)
    batch.refresh_from_db()
    assert batch.status == "done", batch.error
    response = alice.get(reverse("batch_download", args=[batch.pk]))
    text = b"".join(response.streaming_content).decode()
    assert runnable_cells(text) == [], text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["file"] for r in rows] == ["'" + EVIL_FILE, "'-1+1.jpg"] and rows[0]["label"] == "'" + EVIL_CLASS
    # ... and the batch's table on the predict page shows the names as given, not quoted.
    page = alice.get(reverse("predict", args=[project.pk]) + f"?batch={batch.pk}").content.decode()
    assert html.escape(EVIL_FILE) in page and html.escape("'" + EVIL_FILE) not in page

    # The report's manifest: the download, the HTML report's data: link and the PDF's attachment.
    manifest = alice.get(reverse("run_report_manifest", args=[run.pk])).content.decode()
    assert runnable_cells(manifest) == [], manifest
    rows = list(csv.DictReader(io.StringIO(manifest)))
    evil = [r for r in rows if r["file_name"] == "'" + EVIL_FILE]
    assert len(evil) == 1 and evil[0]["class"] == "'" + EVIL_CLASS and evil[0]["image_id"].isdigit()
    report = alice.get(reverse("run_report", args=[run.pk])).content.decode()
    linked = re.search(r'href="data:text/csv;base64,([^"]+)"', report).group(1)
    assert base64.b64decode(linked).decode() == manifest
    # The report's class table counts the class by its real name: 6 + the uploaded one (none lost to the quote).
    counts = re.search(r"<tr><td>\+cmd</td>(.*?)</tr>", report)
    assert counts and re.findall(r"<td>(\d+)</td>", counts.group(1))[-1] == "7", counts and counts.group(0)
    attachment = _pdf_attachment(alice.get(reverse("run_report_pdf", args=[run.pk])).content, tmp_path)
    assert attachment == manifest


def _pdf_attachment(pdf: bytes, tmp_path: Path) -> str:
    from pypdf import PdfReader

    (data,) = PdfReader(io.BytesIO(pdf)).attachments["manifest.csv"]
    return data.decode()


def test_a_manifest_recorded_before_quoting_is_quoted_when_read(alice, trained_with_formula_names):
    project, run = trained_with_formula_names
    recorded = reporting_reports.report_dir(run) / "manifest.csv"
    out = io.StringIO()  # the names as the app wrote them before: unquoted
    csv.writer(out, lineterminator="\n").writerows([[csvsafe.shown(cell) for cell in row]
                                                      for row in csv.reader(io.StringIO(recorded.read_text()))])
    assert runnable_cells(out.getvalue())
    recorded.write_text(out.getvalue())
    manifest = alice.get(reverse("run_report_manifest", args=[run.pk])).content.decode()
    assert runnable_cells(manifest) == []
    assert ["'" + EVIL_FILE, "'" + EVIL_CLASS] in [[row["file_name"], row["class"]] for row in csv.DictReader(io.StringIO(manifest))]


@pytest.mark.parametrize("text", [EVIL_FILE, "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=x", "''+x", "'", "plain.png",
                                  "it's.png", "", "-0.5", "1e-3"])
def test_a_quoted_cell_reads_back_as_the_name_given(text):
    written = csvsafe.safe_cell(text)
    assert not written.startswith(FORMULA_STARTS) or re.fullmatch(r"-?[\d.e-]+", written)
    assert csvsafe.shown(written) == text


def test_numbers_are_not_quoted():
    assert [csvsafe.safe_cell(v) for v in (-1, -0.25, "-0.25", "0.930000", True)] == [-1, -0.25, "-0.25", "0.930000", True]


def test_every_csv_the_app_writes_goes_through_csvsafe():
    """One helper for every writer: csv.writer and csv.DictWriter appear nowhere else."""
    app = Path(__file__).resolve().parents[2] / "transferapp"
    offenders = [str(path.relative_to(app)) for path in app.rglob("*.py") if path.name != "csvsafe.py"
                 and re.search(r"csv\.(writer|DictWriter)\b", path.read_text())]
    assert offenders == []
