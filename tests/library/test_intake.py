"""Bad and unusual image files: each gets a clear message or is normalised correctly."""
import io

import pytest
from PIL import Image

from tests.conftest import image_bytes
from transferapp.engine import imaging
from transferapp.library import intake

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 4_000_000}


def _save(image, fmt, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _rejected(data: bytes) -> str:
    with pytest.raises(intake.ImageRejected) as info:
        intake.check_image(data, **LIMITS)
    return str(info.value)


def test_a_zero_byte_file_is_rejected():
    assert "empty" in _rejected(b"")


def test_a_text_file_named_png_is_rejected():
    assert "not an image file" in _rejected(b"hello, I am a text file")


def test_a_truncated_jpeg_is_rejected():
    data = image_bytes(size=(200, 200), fmt="JPEG")
    assert "corrupt or truncated" in _rejected(data[: len(data) // 2])


def test_a_one_pixel_image_is_rejected_as_too_small():
    assert "1x1 pixels" in _rejected(_save(Image.new("RGB", (1, 1)), "PNG"))


def test_a_decompression_bomb_is_rejected_before_decoding():
    bomb = _save(Image.new("1", (5000, 5000)), "PNG")  # 25 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    assert "megapixels" in _rejected(bomb)


def test_a_file_over_the_size_limit_is_rejected():
    with pytest.raises(intake.ImageRejected, match="limit is 1 MB"):
        intake.check_image(b"x" * 2_000_000, max_bytes=intake.MB, max_pixels=10**6)  # MB as MAX_UPLOAD_MB counts


def test_a_png_named_jpg_is_stored_as_png():
    checked = intake.check_image(image_bytes(fmt="PNG"), **LIMITS)
    assert checked.extension == "png"


@pytest.mark.parametrize(
    "image",
    [
        Image.new("I;16", (40, 30), 40000),
        Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        Image.new("P", (40, 30), 3),
        Image.new("RGBA", (40, 30), (255, 0, 0, 128)),
        Image.new("L", (40, 30), 128),
    ],
    ids=lambda image: image.mode,
)
def test_every_mode_becomes_rgb(image):
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    checked = intake.check_image(_save(image, fmt), **LIMITS)
    rgb = imaging.load_rgb(checked.data)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)


def test_a_sixteen_bit_png_keeps_its_brightness():
    rgb = imaging.load_rgb(_save(Image.new("I;16", (20, 20), 65535), "PNG"))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (60, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": a phone held upright
    data = _save(wide, "JPEG", exif=exif.tobytes())
    checked = intake.check_image(data, **LIMITS)
    assert imaging.load_rgb(checked.data).size == (20, 60)
    assert Image.open(io.BytesIO(checked.thumbnail_jpeg)).size == (20, 60)


def test_an_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    checked = intake.check_image(out.getvalue(), **LIMITS)
    first = imaging.load_rgb(checked.data)
    red, green, blue = first.getpixel((5, 5))
    assert red > 200 and blue < 50
