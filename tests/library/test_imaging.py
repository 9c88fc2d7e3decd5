"""Real-world scientific and medical files decode to the image a viewer would show (pixel statistics
are checked, not only mode and size)."""
import io

import numpy as np
import pytest
from PIL import Image

from transferapp.library import intake

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _tiff(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="TIFF", **kwargs)
    return out.getvalue()


def _gradient(high: int, dtype=np.uint16, shape=(64, 128)) -> np.ndarray:
    """A horizontal ramp 0..high: like an X-ray's 12-bit data in a 16-bit container."""
    ramp = np.linspace(0, high, shape[1])
    return np.tile(ramp, (shape[0], 1)).astype(dtype)


def _grey(data: bytes) -> np.ndarray:
    checked = intake.check_image(data, **LIMITS)
    assert checked.rgb.mode == "RGB"
    return np.asarray(checked.rgb.convert("L"), dtype=np.float64)


def _assert_full_range_ramp(grey: np.ndarray) -> None:
    # A ramp spread over the whole 0-255 range: mean near the middle, wide spread, dark left, bright right.
    assert 100 < grey.mean() < 155, grey.mean()
    assert grey.std() > 60, grey.std()
    assert grey[:, :5].mean() < 20 and grey[:, -5:].mean() > 235


def test_a_12_bit_xray_in_a_16_bit_png_uses_the_whole_grey_range():
    data = _png(_gradient(4095))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    _assert_full_range_ramp(_grey(data))


def test_a_big_endian_16_bit_tiff_is_read_and_scaled():
    array = _gradient(4095).astype(">u2")
    image = Image.frombuffer("I;16B", (array.shape[1], array.shape[0]), array.tobytes(), "raw", "I;16B", 0, 1)
    _assert_full_range_ramp(_grey(_tiff(image)))


def test_a_little_endian_14_bit_tiff_is_read_and_scaled():
    array = _gradient(16383)
    image = Image.frombuffer("I;16", (array.shape[1], array.shape[0]), array.tobytes(), "raw", "I;16", 0, 1)
    _assert_full_range_ramp(_grey(_tiff(image)))


def test_a_float32_tiff_is_scaled_from_the_range_its_data_uses():
    array = _gradient(1, dtype=np.float32) * 0.003 - 0.001  # tiny physical values, some negative
    _assert_full_range_ramp(_grey(_tiff(Image.fromarray(array, mode="F"))))


def test_a_single_hot_pixel_does_not_darken_a_16_bit_image():
    array = _gradient(1000)
    array[0, 0] = 65535  # a dead-pixel outlier; the robust window ignores it
    _assert_full_range_ramp(_grey(_png(array)))


def test_a_uniform_16_bit_image_becomes_flat_grey_rather_than_failing():
    grey = _grey(_png(np.full((32, 32), 1234, dtype=np.uint16)))
    assert grey.std() == 0


def test_a_one_bit_image_keeps_black_and_white():
    array = np.zeros((40, 40), dtype=bool)
    array[:, 20:] = True
    grey = _grey(_save_mode(Image.fromarray(array), "PNG"))
    assert grey[:, :20].max() == 0 and grey[:, 20:].min() == 255


def test_a_palette_image_keeps_its_colours():
    rgb = Image.new("RGB", (40, 40), (200, 30, 30))
    data = _save_mode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    out = np.asarray(intake.check_image(data, **LIMITS).rgb, dtype=np.float64)
    assert abs(out[..., 0].mean() - 200) < 3 and out[..., 1].mean() < 40


def test_a_cmyk_jpeg_becomes_the_right_rgb_colour():
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(intake.check_image(_save_mode(cmyk, "JPEG"), **LIMITS).rgb, dtype=np.float64)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60 and out[..., 2].mean() < 60


def _save_mode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_a_file_whose_decoder_crashes_gets_a_message_not_an_exception():
    # A TIFF header promising a compression Pillow cannot decode.
    array = _gradient(255, dtype=np.uint8)
    data = bytearray(_tiff(Image.fromarray(array)))
    # Compression tag (259) value 1 -> 34712 (JPEG 2000 in TIFF, which Pillow has no decoder for).
    marker = (259).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little") + (1).to_bytes(2, "little")
    index = bytes(data).find(marker)
    assert index > 0
    data[index + 8:index + 10] = (34712).to_bytes(2, "little")
    with pytest.raises(intake.ImageRejected) as info:
        intake.check_image(bytes(data), **LIMITS)
    assert "TIFF" in str(info.value) or "corrupt" in str(info.value)
