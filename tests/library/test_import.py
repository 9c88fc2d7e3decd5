"""Zip and folder imports: every real image lands in its class, every other file is reported."""
import io
import json
import zipfile

import django_rq
import pytest
from django.core.management import call_command
from django.urls import reverse
from rq import SimpleWorker

from tests.conftest import image_bytes
from tests.factories import upload
from transferapp.library import imports as library_imports
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob, Project
from transferapp.storage import archive


def make_zip(files: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def messy_zip() -> bytes:
    return make_zip(
        {
            "flowers/daisy/d1.jpg": image_bytes("red", fmt="JPEG", shape_seed=1),
            "flowers/daisy/d2.png": image_bytes("red", shape_seed=2),
            "flowers/roses/r1.jpg": image_bytes("blue", fmt="JPEG", shape_seed=3),
            "flowers/roses/notes.txt": b"picked in June",
            "flowers/roses/broken.jpg": image_bytes("blue", fmt="JPEG", shape_seed=4)[:300],
            "__MACOSX/flowers/daisy/._d1.jpg": b"\x00\x05\x16\x07",
            "flowers/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "flowers/daisy/.hidden.jpg": image_bytes("red", shape_seed=5),
            "flowers/Thumbs.db": b"junk",
        }
    )


def _summary(project, data: bytes, tmp_path):
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    with archive.ZipSource(path, archive.Limits()) as source:
        return library_imports.import_entries(project=project, entries=source)


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_messy_zip_imports_every_image_and_reports_the_rest(user, tmp_path):
    project = library_projects.project_create(owner=user, name="Flowers")
    summary = _summary(project, messy_zip(), tmp_path)
    assert sorted(project.labels.values_list("name", flat=True)) == ["daisy", "roses"]
    assert summary["accepted"] == 3 and summary["refused"] == 2 and summary["skipped"] == 0 and summary["junk"] == 4
    reasons = {row["name"]: row["reason"] for row in summary["report"] if not row["ok"]}
    assert "not an image file" in reasons["flowers/roses/notes.txt"]
    assert "corrupt or truncated" in reasons["flowers/roses/broken.jpg"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_nested_splits_are_kept_as_given(user, tmp_path):
    project = library_projects.project_create(owner=user, name="Split")
    data = make_zip(
        {
            "train/cat/a.png": image_bytes("red", shape_seed=1),
            "train/dog/b.png": image_bytes("blue", shape_seed=2),
            "val/cat/c.png": image_bytes("red", shape_seed=3),
            "test/dog/d.png": image_bytes("blue", shape_seed=4),
        }
    )
    _summary(project, data, tmp_path)
    splits = dict(Image.objects.values_list("original_name", "split"))
    assert splits == {"train/cat/a.png": "train", "train/dog/b.png": "train", "val/cat/c.png": "val", "test/dog/d.png": "test"}


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_zip_slip_member_is_refused_and_nothing_is_written_outside(user, tmp_path):
    project = library_projects.project_create(owner=user, name="Slip")
    data = make_zip({"../../evil/x.png": image_bytes("red"), "cat/ok.png": image_bytes("blue")})
    summary = _summary(project, data, tmp_path)
    assert summary["accepted"] == 1
    assert "outside the archive" in summary["report"][0]["reason"]
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_zip_bomb_member_is_not_unpacked(user, tmp_path):
    project = library_projects.project_create(owner=user, name="Bomb")
    data = make_zip({"cat/bomb.png": b"\x00" * 20_000_000, "cat/ok.png": image_bytes("red")}, zipfile.ZIP_DEFLATED)
    assert len(data) < 100_000
    summary = _summary(project, data, tmp_path)
    assert summary["accepted"] == 1
    assert "zip bomb" in summary["report"][0]["reason"]


def test_an_archive_with_too_many_files_is_refused_whole(tmp_path):
    path = tmp_path / "many.zip"
    path.write_bytes(make_zip({f"cat/{i}.png": b"x" for i in range(5)}))
    with pytest.raises(archive.ArchiveRejected, match="limit is 3"):
        with archive.ZipSource(path, archive.Limits(max_files=3)):
            pass


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(archive.ArchiveRejected, match="not a zip"):
        with archive.ZipSource(path, archive.Limits()):
            pass


@pytest.mark.django_db(transaction=True)
def test_a_zip_uploaded_in_the_browser_is_imported_by_the_worker(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Flowers")
    response = alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("flowers.zip", messy_zip(), "application/zip")})
    job = ImportJob.objects.get()
    assert response["Location"] == job.get_absolute_url()
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job.refresh_from_db()
    assert job.status == "done" and job.accepted == 3 and job.refused == 2 and job.skipped == 0 and job.junk == 4
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "flowers/roses/notes.txt" in page and "3 images imported" in page


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_import_command_reads_a_folder_and_prints_json(user, tmp_path, capsys):
    for i, color in enumerate(["red", "blue"]):
        (tmp_path / "data" / color).mkdir(parents=True)
        (tmp_path / "data" / color / f"{i}.png").write_bytes(image_bytes(color, shape_seed=i))
    (tmp_path / "data" / "red" / "readme.txt").write_text("hello")
    call_command("import_images", str(tmp_path / "data"), user="alice", project="Cmd", json=True)
    document = json.loads(capsys.readouterr().out)
    assert document["accepted"] == 2 and document["refused"] == 1 and document["skipped"] == 0
    assert Project.objects.get(name="Cmd").images.count() == 2


def _every_bad_input() -> dict[str, tuple[bytes, str]]:
    """Each crafted bad file of issue #4 with the reason the user must read for it."""
    from PIL import Image as PILImage

    save = _raw
    return {
        "cls/truncated.jpg": (image_bytes("red", size=(200, 200), fmt="JPEG", shape_seed=90)[:400], "corrupt or truncated"),
        "cls/zero.jpg": (b"", "empty"),
        "cls/text.png": (b"just words", "not an image file"),
        "cls/bomb.png": (save(PILImage.new("1", (9000, 9000)), "PNG"), "megapixels"),
        "cls/tiny.png": (save(PILImage.new("RGB", (1, 1)), "PNG"), "1x1 pixels"),
    }


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_every_bad_input_is_reported_by_name_while_every_good_file_beside_it_is_kept(user, tmp_path, settings):
    from PIL import Image as PILImage

    settings.MAX_IMAGE_PIXELS = 40_000_000
    good = {
        "cls/png-named.jpg": image_bytes("red", shape_seed=91),
        "cls/sixteen-bit.png": _raw(PILImage.new("I;16", (40, 30), 30000), "PNG"),
        "cls/cmyk.jpg": _raw(PILImage.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG"),
        "cls/animated.gif": _animated_gif(),
        "other/plain.png": image_bytes("blue", shape_seed=92),
    }
    bad = _every_bad_input()
    data = make_zip({**good, **{name: content for name, (content, _) in bad.items()},
                     "__MACOSX/cls/._x.jpg": b"junk", "cls/.hidden.png": image_bytes("green")})
    project = library_projects.project_create(owner=user, name="Everything")
    summary = _summary(project, data, tmp_path)
    reasons = {row["name"]: row["reason"] for row in summary["report"] if not row["ok"]}
    for name, (_, reason) in bad.items():
        assert reason in reasons[name], (name, reasons.get(name))
    assert summary["accepted"] == len(good) and summary["junk"] == 2
    assert set(project.images.values_list("original_name", flat=True)) == set(good)


def _raw(image, fmt) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _animated_gif() -> bytes:
    from PIL import Image as PILImage

    frames = [PILImage.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_import_images_accepts_dicom_16_bit_and_ordinary_files_and_names_each_refusal(user, tmp_path, capsys):
    import numpy as np
    import pydicom
    from PIL import Image as PILImage

    from tests.library.test_dicom import dataset_bytes, dicom_file

    folder = tmp_path / "mixed"
    for name in ("ct", "xray"):
        (folder / name).mkdir(parents=True)
    (folder / "ct" / "slice.dcm").write_bytes(dicom_file("CT_small.dcm").read_bytes())
    (folder / "ct" / "IM000002").write_bytes(dicom_file("MR_small_RLE.dcm").read_bytes())  # no extension, RLE
    (folder / "ct" / "IM000003").write_bytes(dicom_file("JPEG2000.dcm").read_bytes())
    ramp = np.tile(np.linspace(0, 4095, 64), (48, 1)).astype(np.uint16)
    (folder / "xray" / "twelve_bit.png").write_bytes(_raw(PILImage.fromarray(ramp), "PNG"))
    big_endian = PILImage.frombuffer("I;16B", (64, 48), ramp.astype(">u2").tobytes(), "raw", "I;16B", 0, 1)
    (folder / "xray" / "big_endian.tif").write_bytes(_raw(big_endian, "TIFF"))
    (folder / "xray" / "photo.jpg").write_bytes(image_bytes("red", fmt="JPEG"))
    multi = pydicom.dcmread(dicom_file("MR_small.dcm"))
    multi.NumberOfFrames, multi.PixelData = 3, multi.PixelData * 3
    (folder / "ct" / "cine.dcm").write_bytes(dataset_bytes(multi))
    (folder / "ct" / "report.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (folder / "xray" / "notes.txt").write_text("not an image")
    call_command("import_images", str(folder), user="alice", project="Mixed", json=True)
    document = json.loads(capsys.readouterr().out)
    refused = {row["name"]: row["reason"] for row in document["report"] if not row["ok"]}
    assert document["accepted"] == 6, document
    assert set(refused) == {"ct/cine.dcm", "ct/report.dcm", "xray/notes.txt"}
    assert "3 frames" in refused["ct/cine.dcm"] and "DICOM" in refused["ct/report.dcm"]
    assert "not an image file" in refused["xray/notes.txt"]
    images = Project.objects.get(name="Mixed").images.all()
    assert sorted(image.file.name.rsplit(".", 1)[1] for image in images) == ["dcm", "dcm", "dcm", "jpg", "png", "tif"]


def _import_through_the_page(client, project, data: bytes) -> tuple[ImportJob, str]:
    response = client.post(reverse("import_create", args=[project.pk]), {"archive": upload("data.zip", data, "application/zip")})
    assert response.status_code == 302
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.filter(project=project).latest("pk")
    return job, client.get(job.get_absolute_url()).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_zip_report_says_refused_for_bad_files_and_skipped_only_for_harmless_repeats(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Words")
    red = image_bytes("red", shape_seed=1)
    data = make_zip({
        "cat/a.png": red,
        "cat/a-again.png": red,  # the same file twice in one class: a harmless repeat
        "dog/b.png": image_bytes("blue", shape_seed=2),
        "dog/copy-of-a.png": red,  # a copy in another class: refused, one image cannot have two labels
        "dog/notes.txt": b"not an image",
    })
    job, page = _import_through_the_page(alice, project, data)
    assert (job.accepted, job.skipped, job.refused) == (2, 1, 2)
    assert "2 images imported · 1 skipped (already in their class) · 2 refused" in page
    refused_part = page.split("Refused files")[1].split("Skipped files")[0]
    assert "dog/notes.txt" in refused_part and "dog/copy-of-a.png" in refused_part
    assert "cat/a-again.png" not in refused_part and "cat/a-again.png" in page.split("Skipped files")[1]
    assert "2 imported, 1 skipped, 2 refused" in alice.get(project.get_absolute_url()).content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_class_whose_every_file_was_refused_is_not_created(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Refused")
    data = make_zip({
        "cat/a.png": image_bytes("red", shape_seed=1),
        "notes/readme.txt": b"hello",
        "notes/broken.jpg": image_bytes("blue", fmt="JPEG", shape_seed=4)[:300],
    })
    job, page = _import_through_the_page(alice, project, data)
    assert list(project.labels.values_list("name", flat=True)) == ["cat"]
    assert job.refused == 2 and "notes/readme.txt" in page and "notes/broken.jpg" in page


@pytest.mark.django_db(transaction=True)
def test_an_empty_zip_says_it_held_no_images(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Empty")
    job, page = _import_through_the_page(alice, project, make_zip({"__MACOSX/._x": b"\x00", "folder/.DS_Store": b"junk"}))
    assert job.status == "done" and job.accepted == 0
    assert "The zip held no images" in page
    job, page = _import_through_the_page(alice, project, make_zip({}))
    assert job.status == "done" and "The zip held no images" in page


@pytest.mark.django_db(transaction=True)
def test_a_recognised_train_val_test_layout_is_said_with_its_counts_on_every_page(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Layout")
    files = {f"train/cat/t{i}.png": image_bytes("red", shape_seed=i) for i in range(3)}
    files |= {f"train/dog/t{i}.png": image_bytes("blue", shape_seed=10 + i) for i in range(2)}
    files |= {"val/cat/v0.png": image_bytes("red", shape_seed=20), "val/dog/v1.png": image_bytes("blue", shape_seed=21)}
    files |= {"test/cat/x0.png": image_bytes("red", shape_seed=30)}
    job, page = _import_through_the_page(alice, project, make_zip(files))
    assert job.split_counts == {"train": 5, "val": 2, "test": 1}
    assert "layout was recognised: 5 training · 2 validation · 1 test (held out of training) images" in page
    project_page = alice.get(project.get_absolute_url()).content.decode()
    assert "Split kept as given: 5 training · 2 validation · 1 test images" in project_page
    cat = project.labels.get(name="cat")
    class_page = alice.get(cat.get_absolute_url()).content.decode()
    assert "This class by side of the split: 3 training · 1 validation · 1 test." in class_page
    assert class_page.count('class="badge thumb-badge"') == 2  # the val image's badge and the test image's
    assert ">val</span>" in class_page and ">test</span>" in class_page


@pytest.mark.django_db(transaction=True)
def test_a_plain_class_folder_zip_claims_no_layout(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Plain")
    job, page = _import_through_the_page(alice, project, make_zip({"cat/a.png": image_bytes("red", shape_seed=1)}))
    assert job.split_counts == {} and "layout was recognised" not in page
    assert "Split kept as given" not in alice.get(project.get_absolute_url()).content.decode()
