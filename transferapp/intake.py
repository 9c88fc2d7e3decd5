"""Checking and normalising uploaded image files (no Django models here).

Every rejection raises ImageRejected with a sentence a domain expert understands;
the caller reports it next to the file name and keeps every other file.
"""
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from transferapp.duplicates import dhash
from transferapp.engine.data import to_rgb

# Formats we accept, by what the bytes are (a PNG named .jpg is still a PNG).
ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg"}
MIN_SIDE = 16
THUMB_SIZE = 256


class ImageRejected(Exception):
    pass


@dataclass
class CheckedImage:
    data: bytes
    sha256: str
    extension: str
    width: int
    height: int
    thumbnail_jpeg: bytes
    dhash: str
    rgb: Image.Image  # upright RGB, decoded once for thumbnail, hash and prediction


def check_size(size: int, max_bytes: int) -> None:
    """Called with an upload's declared size before it is read, and again on the bytes."""
    if size == 0:
        raise ImageRejected("The file is empty (0 bytes).")
    if size > max_bytes:
        raise ImageRejected(f"The file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    check_size(len(data), max_bytes)
    image = _open(data, max_pixels)
    width, height = image.size  # as stored; the upright RGB copy below feeds thumbnail and hash
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(f"The image is only {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")
    rgb = to_rgb(image)
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        extension=ACCEPTED_FORMATS[image.format],
        width=width,
        height=height,
        thumbnail_jpeg=_thumbnail(rgb),
        dhash=dhash(rgb),
        rgb=rgb,
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("This is not an image file we can read (JPEG, PNG, GIF, WebP, BMP or TIFF).") from None
    except Image.DecompressionBombError:
        raise ImageRejected(f"The image has too many pixels (limit {max_pixels / 1e6:.0f} megapixels).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"The image is corrupt or truncated ({exc}).") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"{image.format} images are not supported; use JPEG, PNG, GIF, WebP, BMP or TIFF.")
    if image.width * image.height > max_pixels:
        raise ImageRejected(
            f"The image is {image.width}x{image.height} pixels, over the limit of {max_pixels / 1e6:.0f} megapixels."
        )
    try:
        image.load()  # decodes everything: truncated or corrupt files fail here, not during training
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"The image is corrupt or truncated ({exc}).") from None
    return image


def _thumbnail(rgb: Image.Image) -> bytes:
    rgb = rgb.copy()
    rgb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=85)
    return out.getvalue()
