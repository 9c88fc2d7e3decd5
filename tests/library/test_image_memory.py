"""The 16-bit image memory bomb (issue 30, item 2): a decoded-size cap beside the pixel cap,
windowing that needs no full-size float copies, a bound on decodes at once, and a prediction
allowance counted by size. The classic bombs (pixels, zips) are tested in test_intake/test_import."""
import threading
import time
import tracemalloc

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse

from tests.conftest import image_bytes, sixteen_bit_bomb
from tests.factories import upload
from transferapp.accounts import api_keys
from transferapp.engine import imaging
from transferapp.library import intake
from transferapp.library import projects as library_projects

MB = 1_000_000


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


# --- the cap, in the engine ------------------------------------------------------------------

def test_decoded_size_counts_channels_and_bytes_a_sample():
    assert imaging.decoded_bytes(100, 10, 3, 1) == 3000  # 8-bit RGB
    assert imaging.decoded_bytes(100, 10, 1, 2) == 2000  # 16-bit grey
    assert imaging.decoded_bytes(6300, 6300, 1, 2) == 79_380_000


def test_high_bit_depth_images_get_a_lower_cap():
    assert imaging.decoded_bytes_cap(120 * MB, high_depth=False) == 120 * MB
    assert imaging.decoded_bytes_cap(120 * MB, high_depth=True) == 60 * MB


def test_a_16_bit_image_is_refused_where_an_8_bit_one_of_the_same_pixels_passes():
    grey8 = _png(np.full((100, 100), 200, dtype=np.uint8))  # 10,000 bytes decoded
    grey16 = _png(np.full((100, 100), 2000, dtype=np.uint16))  # 20,000 bytes, against half the cap
    assert imaging.decode(grey8, max_decoded_bytes=12_000).width == 100
    with pytest.raises(imaging.TooManyPixels, match="100x100 pixels of 1 16-bit channel: 0 MB once decoded"):
        imaging.decode(grey16, max_decoded_bytes=12_000)
    assert imaging.decode(grey16, max_decoded_bytes=40_000).width == 100


def test_the_default_cap_takes_a_40_megapixel_photo_but_refuses_the_16_bit_bomb_before_decoding(settings):
    cap = settings.MAX_DECODED_MB * MB
    imaging._check_decoded_size(7300, 5470, 3, 1, False, cap)  # an 8-bit RGB camera photo: no error
    tracemalloc.start()
    try:
        with pytest.raises(imaging.TooManyPixels) as refused:
            imaging.decode(sixteen_bit_bomb(), max_pixels=settings.MAX_IMAGE_PIXELS, max_decoded_bytes=cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "6300x6300" in str(refused.value) and "16-bit" in str(refused.value) and "8 bits" in str(refused.value)
    assert peak < 5 * MB  # refused from the header: nothing decoded


# --- windowing without full-size float copies ------------------------------------------------

def _windowed_as_before(values: np.ndarray) -> np.ndarray:
    """The float64 windowing this replaced (the output must not change for ordinary X-rays)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    sample = finite[::max(1, finite.size // imaging._PERCENTILE_SAMPLE)]
    low, high = np.percentile(sample, [imaging.LOW_PERCENTILE, imaging.HIGH_PERCENTILE])
    return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("high", [1023, 4095, 16383, 65535])
def test_windowing_gives_the_same_grey_levels_as_the_float64_version(high):
    rng = np.random.default_rng(high)
    xray = rng.integers(0, high + 1, size=(1500, 1200)).astype(np.uint16)
    xray[0, :20] = high  # hot pixels
    difference = np.abs(imaging.window_to_uint8(xray).astype(int) - _windowed_as_before(xray).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # float32 rounding at .5 only


def test_windowing_a_large_16_bit_image_needs_a_few_mb_beyond_its_result():
    xray = np.random.default_rng(0).integers(0, 4096, size=(3000, 3000)).astype(np.uint16)  # 9 MP
    tracemalloc.start()
    try:
        grey = imaging.window_to_uint8(xray)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    # The result is 9 MB; the float64 version held ~30 bytes a pixel (270 MB) at its peak.
    assert peak < 9 * MB + 24 * MB, peak


def test_windowing_a_float_image_with_nan_and_inf_keeps_them_in_range():
    values = np.linspace(-1.0, 1.0, 40_000, dtype=np.float32).reshape(200, 200)
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf
    grey = imaging.window_to_uint8(values)
    assert grey[0, 1] == 255 and grey[0, 2] == 0 and grey[100, 100] in (127, 128)
    assert not imaging.window_to_uint8(np.full((4, 4), np.nan)).any()


# --- decodes at once, per process ------------------------------------------------------------

def test_no_more_than_max_concurrent_decodes_run_at_once(settings, monkeypatch):
    settings.MAX_CONCURRENT_DECODES = 2
    monkeypatch.setattr(intake, "_decode_slots", None)  # sized from the setting on first use
    running, most, lock, real_decode = [0], [0], threading.Lock(), imaging.decode

    def decode_slowly(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        try:
            return real_decode(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(imaging, "decode", decode_slowly)
    data = image_bytes()
    threads = [threading.Thread(target=intake.check_image, args=(data,), kwargs={"max_bytes": 10 * MB, "max_pixels": 10**6})
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


# --- the web: refused per file, with its reason ----------------------------------------------

@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_16_bit_bomb_is_refused_on_upload_with_its_name_and_reason(alice, user):
    project = library_projects.project_create(owner=user, name="Chest")
    label = library_projects.label_create(project=project, name="normal")
    files = [upload("bomb.png", sixteen_bit_bomb()), upload("ok.png", image_bytes())]
    page = alice.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files}, follow=True).content.decode()
    assert "bomb.png" in page and "6300x6300 pixels of 1 16-bit channel" in page
    assert list(label.images.values_list("original_name", flat=True)) == ["ok.png"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_api_refuses_the_16_bit_bomb_as_too_large(client, user):
    project = library_projects.project_create(owner=user, name="Chest")
    project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=1)
    _, key = api_keys.api_key_create(project=project)
    response = client.post(f"/api/v1/projects/{project.pk}/predict", data=sixteen_bit_bomb(), content_type="image/png",
                           HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_FILENAME="bomb.png")
    assert response.status_code == 413 and "16-bit" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_api_allowance_counts_an_image_by_its_megapixels(client, user, settings):
    cache.clear()
    settings.API_RATE_PER_MIN, settings.PREDICT_UNIT_MEGAPIXELS = 4, 0.001  # a 96x96 image counts 10
    project = library_projects.project_create(owner=user, name="Chest")
    project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=1)  # no model files: 409
    _, key = api_keys.api_key_create(project=project)

    def predict():
        return client.post(f"/api/v1/projects/{project.pk}/predict", data=image_bytes(size=(96, 96)),
                           content_type="image/png", HTTP_AUTHORIZATION=f"Bearer {key}").status_code

    assert predict() == 409  # decoded (and counted), then the missing model is reported
    assert predict() == 429
    cache.clear()
