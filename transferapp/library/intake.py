"""Checking and normalising uploaded image files (no Django models here).

Every rejection raises ImageRejected with a sentence a domain expert understands;
the caller reports it next to the file name and keeps every other file.
"""
import functools
import hashlib
import io
import threading
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image

from transferapp.engine import imaging
from transferapp.library.duplicates import dhash

# Formats we accept, by what the bytes are (a PNG named .jpg is still a PNG).
ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "MPO": "jpg",
                    "DICOM": "dcm"}
MIN_SIDE = 16
THUMB_SIZE = 256
# A colour-stored image counts as grey when R, G and B agree within GREY_TOLERANCE levels on all
# but GREY_OUTLIER_SHARE of its pixels: JPEG rounding moves grey pixels by a level or two, and an
# X-ray may carry a small coloured marker or annotation.
GREY_TOLERANCE = 8
GREY_OUTLIER_SHARE = 0.01
GREY_CHECK_SIDE = 256  # the check reads a reduced copy: the shares hardly change, the cost does


class ImageRejected(Exception):
    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large  # over a size or pixel cap (HTTP 413), rather than not a usable image


@dataclass
class CheckedImage:
    """A decoded, accepted file. Its hash, thumbnail and dHash are made when first asked for:
    storing an upload needs them, a prediction (page, API, batch) needs only `rgb` (and the page
    the thumbnail), and they cost about half as much again as the decode."""

    data: bytes
    extension: str
    width: int
    height: int
    rgb: Image.Image  # upright RGB, decoded once for thumbnail, hash and prediction
    grayscale: bool = False  # one-channel source (X-ray, microscopy)
    patient_id: str = ""  # DICOM PatientID: only hashed (grouping.patient_key), never stored or shown

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def thumbnail_jpeg(self) -> bytes:
        return jpeg_thumbnail(self.rgb)

    @functools.cached_property
    def dhash(self) -> str:
        return dhash(self.rgb)


MB = 1024 * 1024  # as MAX_UPLOAD_MB counts them: "25 MB" is the setting's 25, never 26.2e6 bytes


def too_large_message(size: int, max_bytes: int, what: str = "file") -> str:
    """One wording for the upload limit wherever it is refused (pages, raw API bodies, multipart)."""
    return f"The {what} is {size / MB:.1f} MB; the limit is {max_bytes / MB:g} MB."


def check_size(size: int, max_bytes: int) -> None:
    """Called with an upload's declared size before it is read, and again on the bytes."""
    if size == 0:
        raise ImageRejected("The file is empty (0 bytes).")
    if size > max_bytes:
        raise ImageRejected(too_large_message(size, max_bytes), too_large=True)


_decode_slots: threading.BoundedSemaphore | None = None
_decode_slots_lock = threading.Lock()


def decode_slots() -> threading.BoundedSemaphore:
    """At most MAX_CONCURRENT_DECODES images are decoded at once in this process: each may hold
    up to MAX_DECODED_MB and its working copies, and a threaded web process serves many requests
    at once (three 40-megapixel 16-bit decodes together took +4.1 GB)."""
    global _decode_slots
    with _decode_slots_lock:
        if _decode_slots is None:
            _decode_slots = threading.BoundedSemaphore(max(1, settings.MAX_CONCURRENT_DECODES))
        return _decode_slots


def check_image(data: bytes, *, max_bytes: int, max_pixels: int, max_decoded_bytes: int | None = None) -> CheckedImage:
    """Decode and check one file; `max_decoded_bytes` defaults to MAX_DECODED_MB."""
    check_size(len(data), max_bytes)
    if max_decoded_bytes is None:
        max_decoded_bytes = settings.MAX_DECODED_MB * 1_000_000
    try:
        with decode_slots():
            decoded = imaging.decode(data, max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes,
                                     accepted_formats=ACCEPTED_FORMATS)
    except imaging.DecodeError as exc:
        raise ImageRejected(str(exc), too_large=isinstance(exc, imaging.TooManyPixels)) from None
    width, height = decoded.width, decoded.height  # as stored; the upright RGB copy feeds thumbnail and hash
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(f"The image is only {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")
    return CheckedImage(
        data=data,
        extension=ACCEPTED_FORMATS[decoded.format],
        width=width,
        height=height,
        rgb=decoded.rgb,
        grayscale=decoded.grayscale or looks_grey(decoded.rgb),
        patient_id=decoded.patient_id,
    )


def looks_grey(rgb: Image.Image) -> bool:
    """Whether an RGB image holds grey pixels (R = G = B within a small tolerance): X-rays and
    microscopy are usually exported as RGB files, whose mode alone says nothing."""
    small = rgb.copy() if max(rgb.size) <= GREY_CHECK_SIDE else rgb.resize(_reduced(rgb.size), Image.Resampling.BOX)
    pixels = np.asarray(small.convert("RGB"), dtype=np.int16)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return float((spread > GREY_TOLERANCE).mean()) <= GREY_OUTLIER_SHARE


def _reduced(size: tuple[int, int]) -> tuple[int, int]:
    scale = GREY_CHECK_SIDE / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def jpeg_thumbnail(rgb: Image.Image, size: int = THUMB_SIZE, quality: int = 85) -> bytes:
    rgb = rgb.copy()
    rgb.thumbnail((size, size))
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()
