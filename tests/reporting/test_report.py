"""The training report: one self-contained page per version (HTML and PDF) with a stable report
ID, the image manifest with each file's SHA-256, owner-only, and `manage.py report` for operators."""
import csv
import hashlib
import io
import re

import django_rq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse
from pypdf import PdfReader
from rq import SimpleWorker

from tests.factories import project_with_images, upload
from tests.library.test_dicom import SECRET_ID, dicom_with_identity
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.models import Image, TrainingRun
from transferapp.reporting import reports as reporting_reports

pytestmark = pytest.mark.django_db(transaction=True)
SECTIONS = ("How to cite", "Intended use and limitations", "Data", "Duplicate and leakage checks", "Image manifest",
            "Model", "What was frozen", "Settings", "Software and hardware", "Durations", "Results", "Per class",
            "Confusion matrix", "Training curves", "How sure are its answers?", "Likely mislabelled images",
            "Export bundle")


def _trained(client, user, *, name="Colours"):
    """A real fast training on real images, two of each class set aside for testing."""
    project = project_with_images(user, classes=("red", "blue", "green"), per_class=8, name=name)
    for label in project.labels.all():
        aside = list(label.images.values_list("pk", flat=True)[:2])
        client.post(reverse("label_bulk", args=[project.pk, label.pk]), {"images": aside, "action": "test"})
    client.post(reverse("training_start", args=[project.pk]), {"base_model": "efficientnet_lite0", "preset": "fast"})
    django_rq.get_worker("default", worker_class=SimpleWorker).work(burst=True)
    run = TrainingRun.objects.get(project=project)
    assert run.status == "succeeded", run.error
    return run


def _version(project, version=1, **metrics):
    """A succeeded version written straight to the database (no model files): the report must
    still render, from what the row records."""
    classes = [label.name for label in project.labels.order_by("name")]
    base = {"classes": classes, "accuracy": 1.0, "n_scored": 2, "accuracy_ci": [0.34, 1.0], "per_class": {},
            "confusion": [[1, 0], [0, 1]][:len(classes)], "evaluated_on": "validation", "n_train": 8, "n_val": 2,
            "seconds": 3.2, "split": "A stratified split made by the run (seed 0).", "config": {"seed": 0}}
    project.last_version = version
    project.save(update_fields=["last_version"])
    return TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0", version=version,
                                      classes=classes, metrics={**base, **metrics})


def _pdf_text(pdf: bytes) -> str:
    """The PDF's text read with pypdf (pure Python: no poppler on the machine), as lower-case words:
    table cells wrap, headers are set in capitals, and extractors differ in spacing."""
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return " ".join(text.lower().split())


def _pdf_pages(pdf: bytes) -> int:
    return len(PdfReader(io.BytesIO(pdf)).pages)


def test_the_report_of_a_trained_version_is_self_contained_and_cites_its_images(alice, user, queue):
    run = _trained(alice, user)
    alice.post(reverse("project_intended_use", args=[run.project.pk]),
               {"intended_use": "Sorting colour swatches from our scanner.\nNot for photographs."})
    page = alice.get(run.get_absolute_url()).content.decode()
    assert reverse("run_report", args=[run.pk]) in page and reverse("run_report_pdf", args=[run.pk]) in page

    response = alice.get(reverse("run_report", args=[run.pk]))
    assert response.status_code == 200 and "default-src 'none'" in response["Content-Security-Policy"]
    body = response.content.decode()
    for section in SECTIONS:
        assert section in body, section
    assert "Sorting colour swatches from our scanner." in body
    # Nothing to fetch: every src and href is a data: URI or a fragment, and no URL names a host.
    assert not re.search(r'(?:src|href)="(?!data:|#)', body), re.findall(r'(?:src|href)="(?!data:|#)[^"]{0,40}', body)
    addresses = re.sub(r"xmlns=['\"][^'\"]*['\"]", "", body)  # an SVG namespace names, it fetches nothing
    assert not re.search(r"url\((?!\s*[\"']?data:)", body) and "http://" not in addresses and "https://" not in addresses
    assert "@import" not in body
    assert body.count('src="data:image/jpeg;base64,') >= 1  # thumbnails travel inside the page
    assert "torch" in body and "torchvision" in body and "timm" in body and "django" in body
    assert reporting_reports.library_versions()["torch"] in body

    # The report ID: the same for two renders, another one when the settings change.
    first = re.search(r'id="report-id">([A-Z0-9-]+)<', body).group(1)
    again = re.search(r'id="report-id">([A-Z0-9-]+)<', alice.get(reverse("run_report", args=[run.pk])).content.decode()).group(1)
    assert first == again
    TrainingRun.objects.filter(pk=run.pk).update(config={**run.config, "seed": 7})
    changed = re.search(r'id="report-id">([A-Z0-9-]+)<', alice.get(reverse("run_report", args=[run.pk])).content.decode()).group(1)
    assert changed != first
    TrainingRun.objects.filter(pk=run.pk).update(config=run.config)

    # The manifest: every image of the run, its class and role as the run saw them, its real SHA-256.
    manifest = alice.get(reverse("run_report_manifest", args=[run.pk])).content.decode()
    rows = list(csv.DictReader(io.StringIO(manifest)))
    images = {str(image.pk): image for image in Image.objects.filter(project=run.project)}
    assert len(rows) == len(images) == 24 and {r["image_id"] for r in rows} == set(images)
    for row in rows:
        image = images[row["image_id"]]
        assert row["sha256"] == hashlib.sha256(image.file.open("rb").read()).hexdigest()
        assert row["class"] == image.label.name and row["file_name"] == image.original_name
    assert {r["image_id"] for r in rows if r["role"] == "test"} == {str(pk) for pk in Image.objects.filter(split="test").values_list("pk", flat=True)}
    assert {r["image_id"] for r in rows if r["role"] == "validation"} == set(run.metrics["val_keys"])
    assert hashlib.sha256(manifest.encode()).hexdigest() in body
    # Recorded at training: moving an image afterwards does not rewrite what the run used.
    moved = Image.objects.filter(project=run.project, label__name="red").first()
    library_images.images_move(images=[moved], label=run.project.labels.get(name="blue"))
    again_rows = list(csv.DictReader(io.StringIO(alice.get(reverse("run_report_manifest", args=[run.pk])).content.decode())))
    assert next(r for r in again_rows if r["image_id"] == str(moved.pk))["class"] == "red"

    pdf = alice.get(reverse("run_report_pdf", args=[run.pk]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert _pdf_pages(pdf.content) > 1 and len(pdf.content) > 50_000
    text = _pdf_text(pdf.content)
    for section in SECTIONS:
        assert section.lower() in text, section
    assert first.lower() in text
    # Importing WeasyPrint sets Pillow's LOAD_TRUNCATED_IMAGES for the whole process: uploads after a
    # PDF must still refuse a truncated image.
    from PIL import ImageFile
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_the_report_tests_read_the_pdf_with_no_poppler_on_the_machine(alice, user, monkeypatch):
    """A fresh machine has Python and Pango but not poppler: the PDF is read in Python, with no
    program on PATH, and neither the tests nor CI call poppler's tools or install its package."""
    project = project_with_images(user, per_class=5)
    version = _version(project)
    pdf = alice.get(reverse("run_report_pdf", args=[version.pk])).content
    monkeypatch.setenv("PATH", "")
    assert _pdf_pages(pdf) > 1
    text = _pdf_text(pdf)
    for section in SECTIONS:
        assert section.lower() in text, section
    assert "model v1" in text and "efficientnet" in text
    poppler_tools = ("pdf" + "totext", "pdf" + "info", "poppler" + "-utils")  # spelt apart: this file must not match
    root = settings.BASE_DIR
    for path in [*sorted((root / "tests").rglob("*.py")), root / ".ci" / "run"]:
        source = path.read_text()
        assert not [tool for tool in poppler_tools if tool in source], path


def test_the_report_is_its_owners_only(client, alice, user, other_user):
    project = project_with_images(user, per_class=5)
    version = _version(project)
    unversioned = TrainingRun.objects.create(project=project, status="running", base_model="efficientnet_lite0")
    urls = [reverse(name, args=[version.pk]) for name in ("run_report", "run_report_pdf", "run_report_manifest")]
    assert alice.get(urls[0]).status_code == 200
    assert alice.get(reverse("run_report", args=[unversioned.pk])).status_code == 404
    client.force_login(other_user)
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("project_intended_use", args=[project.pk]), {"intended_use": "mine now"}).status_code == 404
    project.refresh_from_db()
    assert project.intended_use == ""


def test_a_dicom_projects_report_names_no_patient(alice, user):
    project = library_projects.project_create(owner=user, name="Scans")
    for name in ("mr", "ct"):
        label = library_projects.label_create(project=project, name=name)
        for i in range(2):
            alice.post(reverse("label_upload", args=[project.pk, label.pk]),
                       # Exported DICOM files are often named after the patient or the accession number.
                       {"files": [upload(f"{SECRET_ID}_{name}{i}.dcm", dicom_with_identity(patient_id=f"{SECRET_ID}-{name}{i}"))]})
    images = list(Image.objects.filter(project=project))
    assert len(images) == 4
    mistake = {"key": str(images[0].pk), "true": "ct", "predicted": "mr", "confidence": 0.8}
    version = _version(project, mistakes=[mistake])
    html = alice.get(reverse("run_report", args=[version.pk])).content.decode()
    assert 'src="data:image/jpeg;base64,' in html  # the scan's rendered thumbnail, not the file
    manifest = alice.get(reverse("run_report_manifest", args=[version.pk])).content.decode()
    pdf_text = _pdf_text(alice.get(reverse("run_report_pdf", args=[version.pk])).content)
    for text in (html, manifest, pdf_text):
        assert SECRET_ID not in text and "Secretname" not in text


def test_the_report_command_writes_both_formats_and_refuses_clearly(user, django_user_model, tmp_path):
    project = project_with_images(user, per_class=5)
    _version(project, version=1)
    _version(project, version=2)
    call_command("report", "--project", "Colours", "--version", "1", "--out", str(tmp_path / "v1.html"), stdout=io.StringIO())
    assert "model v1" in (tmp_path / "v1.html").read_text()
    out = io.StringIO()
    call_command("report", "--project", "Colours", "--out", str(tmp_path / "latest.pdf"), stdout=out)
    assert (tmp_path / "latest.pdf").read_bytes().startswith(b"%PDF") and "v2" in out.getvalue()

    def refusal(*args) -> str:
        with pytest.raises(CommandError) as caught:
            call_command("report", *args, stdout=io.StringIO())
        return str(caught.value)
    assert "No project named 'Nope'" in refusal("--project", "Nope", "--out", str(tmp_path / "x.pdf"))
    assert "has no version 9" in refusal("--project", "Colours", "--version", "9", "--out", str(tmp_path / "x.pdf"))
    assert ".pdf or .html" in refusal("--project", "Colours", "--out", str(tmp_path / "x.docx"))
    other = django_user_model.objects.create_user("bob", password="a-long-password-3")
    project_with_images(other, per_class=5)
    assert "add --user" in refusal("--project", "Colours", "--out", str(tmp_path / "x.pdf"))
    call_command("report", "--project", "Colours", "--user", "alice", "--out", str(tmp_path / "alice.html"), stdout=io.StringIO())
    assert (tmp_path / "alice.html").exists()


@pytest.mark.parametrize("metrics, says", [
    ({"chosen_stage": "finetune", "depth": {"first_trained_stage": 0, "stages": 9}}, "Nothing was frozen: every layer"),
    ({"chosen_stage": "finetune", "depth": {"first_trained_stage": 5, "stages": 9}},
     "frozen except its top 3 blocks and its final layer"),
    ({"chosen_stage": "finetune", "depth": {"first_trained_stage": 8, "stages": 9}}, "frozen except its final layer,"),
    ({"chosen_stage": "finetune", "config": {"unfrozen_blocks": 2}}, "frozen except its top 2 blocks"),  # an older run
    ({"chosen_stage": "head", "depth": {"first_trained_stage": 0, "stages": 9}}, "The whole pretrained body was frozen"),
    ({"chosen_stage": "ensemble", "depth": {"first_trained_stage": 5, "stages": 9}},
     "averaged with those of the quick model"),  # the kept average: fine-tuned and quick model both
])
def test_the_report_says_what_was_frozen_for_the_depth_that_trained(metrics, says):
    run = TrainingRun(metrics=metrics, config={})
    assert says in reporting_reports._frozen(run)
