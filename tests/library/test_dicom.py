"""DICOM as it really arrives: real files from pydicom's test data, compressed or not, uploaded,
imported from a folder and predicted, each shown as a radiologist's viewer would show it."""
import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.urls import reverse
from PIL import Image
from pydicom.data import get_testdata_file

from tests.factories import upload
from transferapp.engine import imaging
from transferapp.engine.data import folder_samples, load_rgb
from transferapp.library import intake
from transferapp.library import projects as library_projects
from transferapp.models import Image as ImageRow

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}
SECRET_NAME, SECRET_ID = "Testpatient^Secretname", "PID-0042-SECRET"


def dicom_file(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def _grey(source) -> np.ndarray:
    return np.asarray(load_rgb(source).convert("L"), dtype=np.float64)


def dataset_bytes(ds) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_with_identity(name="MR_small.dcm", patient_id=SECRET_ID) -> bytes:
    ds = pydicom.dcmread(dicom_file(name))
    ds.PatientName, ds.PatientID = SECRET_NAME, patient_id
    return dataset_bytes(ds)


def test_a_ct_slice_is_scaled_through_its_hounsfield_units():
    grey = _grey(dicom_file("CT_small.dcm"))
    assert grey.shape == (128, 128)
    assert 90 < grey.mean() < 140 and grey.std() > 40  # a real slice, not black, not flat


def test_an_mr_slice_uses_the_window_stored_in_the_file():
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    low = center - 0.5 - (width - 1) / 2
    expected = np.clip(np.rint((ds.pixel_array - low) * 255 / (width - 1)), 0, 255)
    grey = _grey(dicom_file("MR_small.dcm"))
    assert np.abs(grey - expected).max() <= 1
    assert 90 < grey.mean() < 140 and grey.std() > 40


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_jp2klossless.dcm"])
def test_big_endian_and_losslessly_compressed_files_give_the_same_picture(name):
    assert np.array_equal(_grey(dicom_file(name)), _grey(dicom_file("MR_small.dcm")))


def test_a_jpeg_baseline_colour_file_keeps_its_colours():
    rgb = np.asarray(load_rgb(dicom_file("SC_rgb_jpeg_dcmtk.dcm")), dtype=np.int64)
    red, green, blue = rgb[5, 50], rgb[25, 50], rgb[45, 50]  # the file's red, green and blue bands
    assert red[0] > 240 and red[1:].max() < 15
    assert green[1] > 240 and max(green[0], green[2]) < 15
    assert blue[2] > 240 and blue[:2].max() < 15


def test_jpeg_extended_and_jpeg_2000_twelve_bit_files_are_not_black():
    for name in ("JPGExtended.dcm", "JPEG2000.dcm"):
        grey = _grey(dicom_file(name))
        assert grey.std() > 30 and grey.max() > 200, name


def test_a_palette_colour_file_is_shown_through_its_colour_lookup_table():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(dicom_file("examples_palette.dcm"))
    expected = apply_color_lut(ds.pixel_array, ds) >> 8  # 16-bit table entries to 8 bits
    rgb = np.asarray(load_rgb(dicom_file("examples_palette.dcm")), dtype=np.int64)
    assert rgb.shape == (350, 800, 3) and np.abs(rgb - expected).max() <= 1
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 20
    assert rgb.std() > 30 and coloured.mean() > 0.1  # a coloured picture (16% of it), not flat or grey


def test_a_monochrome1_xray_is_inverted_so_bone_is_white():
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = _grey(dataset_bytes(ds))
    assert np.array_equal(inverted, 255 - _grey(dicom_file("MR_small.dcm")))


def test_a_multi_frame_file_gets_a_clear_message():
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    with pytest.raises(intake.ImageRejected) as info:
        intake.check_image(dataset_bytes(ds), **LIMITS)
    assert "2 frames" in str(info.value)


def test_a_dicom_without_pixels_gets_a_clear_message():
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del ds.PixelData
    with pytest.raises(intake.ImageRejected) as info:
        intake.check_image(dataset_bytes(ds), **LIMITS)
    assert "holds no image" in str(info.value)


@pytest.mark.parametrize("name", ["badVR.dcm"])  # Number of Frames "1A": a header value that is not a number
def test_a_dicom_whose_header_values_are_not_numbers_gets_a_clear_message_not_an_exception(name):
    with pytest.raises(intake.ImageRejected) as info:
        intake.check_image(dicom_file(name).read_bytes(), **LIMITS)
    assert "damaged" in str(info.value)


def test_a_checked_dicom_is_stored_as_dcm_and_is_grayscale():
    checked = intake.check_image(dicom_file("CT_small.dcm").read_bytes(), **LIMITS)
    assert checked.extension == "dcm" and checked.grayscale and (checked.width, checked.height) == (128, 128)


def test_folder_data_finds_dicom_files_with_and_without_an_extension(tmp_path):
    for label in ("ct", "mr"):
        (tmp_path / label).mkdir()
    (tmp_path / "ct" / "slice.dcm").write_bytes(dicom_file("CT_small.dcm").read_bytes())
    (tmp_path / "mr" / "IM000001").write_bytes(dicom_file("MR_small.dcm").read_bytes())  # a PACS export: no extension
    classes, samples, _ = folder_samples(tmp_path)
    assert classes == ["ct", "mr"] and len(samples) == 2


@pytest.mark.django_db
def test_an_uploaded_dicom_is_stored_with_a_dcm_extension_and_a_real_thumbnail(alice, user):
    project = library_projects.project_create(owner=user, name="Scans")
    label = library_projects.label_create(project=project, name="mr")
    response = alice.post(reverse("label_upload", args=[project.pk, label.pk]),
                          {"files": [upload("scan.dcm", dicom_with_identity(), "application/dicom")]},
                          HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 200, response.content
    image = ImageRow.objects.get(project=project)
    assert image.file.name.endswith(".dcm") and (image.width, image.height) == (64, 64)
    thumbnail = alice.get(reverse("image_thumbnail", args=[image.pk]))
    grey = np.asarray(Image.open(io.BytesIO(b"".join(thumbnail.streaming_content))).convert("L"), dtype=np.float64)
    assert 90 < grey.mean() < 140 and grey.std() > 40


@pytest.mark.django_db
def test_patient_identity_never_appears_in_pages_or_logs(alice, user, caplog):
    caplog.set_level(logging.DEBUG)
    project = library_projects.project_create(owner=user, name="Scans")
    label = library_projects.label_create(project=project, name="mr")
    alice.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": [upload("scan.dcm", dicom_with_identity())]})
    image = ImageRow.objects.get(project=project)
    pages = [reverse("project_detail", args=[project.pk]), label.get_absolute_url(),
             reverse("image_file", args=[image.pk])]
    for url in pages:
        response = alice.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert SECRET_ID.encode() not in body and b"Secretname" not in body, url
    assert SECRET_ID not in caplog.text and "Secretname" not in caplog.text


def test_a_dicom_is_detected_by_content_whatever_its_name():
    data = dicom_file("CT_small.dcm").read_bytes()
    assert imaging.is_dicom(data) and not imaging.is_dicom(b"\x89PNG" + b"\0" * 200)


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "badVR.dcm"])
def test_a_refused_dicom_leaves_its_reason_only_no_traceback_or_warning_in_the_logs(name, caplog):
    import warnings

    caplog.set_level(logging.DEBUG)
    logging.getLogger("pydicom").setLevel(logging.WARNING)  # what pydicom's config sets when first imported
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        with pytest.raises(intake.ImageRejected):
            intake.check_image(dicom_file(name).read_bytes(), **LIMITS)
    assert not caplog.records, [r.getMessage()[:80] for r in caplog.records]
    assert not raised, [str(w.message)[:80] for w in raised]  # pydicom's warnings can quote element values
