"""The one decode path: bytes or a path (JPEG, PNG, TIFF, GIF, WebP, BMP, 16-bit, float, DICOM) to
the upright 8-bit RGB image that thumbnails, training, evaluation and prediction all see.

Design choices, so that every caller sees the same pixels:
- Always a full decode. JPEG draft mode (decoding at 1/2, 1/4, 1/8 scale) was used for training
  and the CLI but not for uploads and web predictions, so the accuracy reported was not measured
  on the pipeline that served predictions. Features are cached per file, so a full decode costs
  once per image (see README, "Image decoding", for the measured difference).
- High-bit-depth grey (16-bit integers holding 10-, 12- or 14-bit data, 32-bit integers, floats)
  is mapped to 0-255 through a robust window: the 0.5th to 99.5th percentile of the values the
  image actually holds. Dividing by 256 turned a 12-bit X-ray (0-4095) into levels 0-15: black.
- DICOM goes through pydicom: modality LUT (rescale slope/intercept), then the file's VOI LUT or
  window centre/width, else the same percentile window; MONOCHROME1 is inverted, so the result is
  what a radiologist's viewer shows. Identifying fields are never returned except a patient key the
  caller hashes (see dicom_patient_id).
"""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"
# Robust window for data without a display range of its own; a few hot or dead pixels do not matter.
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
# Part of the feature cache's key (features.cache_folder): bump it whenever the pixels this module
# produces for a file change, so that no feature computed from the old pixels is reused.
DECODE_VERSION = 2
# pydicom logs its warnings as well as raising them, and a warning can quote an element's value
# (a patient's name); a failing pixel decoder is logged at ERROR with a traceback per plugin. Every
# such failure becomes the file's own DecodeError sentence, so nothing from pydicom reaches the logs.
# Set after pydicom is imported (_read_dicom): its config module resets the level to WARNING then.
_PYDICOM_LOG_LEVEL = logging.CRITICAL
# Percentiles of a few million values take long; a regular sample gives the same window.
_PERCENTILE_SAMPLE = 1_000_000
# Values mapped to 0-255 at a time: the working copies stay a few MB whatever the image's size
# (float64 copies of the whole image took +1.6 GB for a 40-megapixel 16-bit PNG of 92 KB).
_WINDOW_CHUNK = 1 << 20
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "I;32", "I;32B", "F")
# High-bit-depth images may use this share of the decoded-size cap: mapping them to 8 bits needs
# an integer copy, the 8-bit grey and its RGB image beside the decoded one (about 8 bytes a pixel
# for 16-bit grey against 3 for an 8-bit RGB photo).
HIGH_DEPTH_SHARE = 0.5


class DecodeError(Exception):
    """The file cannot be turned into an image; the message is for the user, about this file only."""


class TooManyPixels(DecodeError):
    """Over the pixel cap: too large (HTTP 413), not malformed."""


@dataclass
class Decoded:
    rgb: Image.Image  # upright, 8-bit RGB
    format: str  # "JPEG", "PNG", ..., or "DICOM"
    width: int  # as stored (before EXIF rotation)
    height: int
    grayscale: bool  # the source had one channel (X-rays, microscopy): offered "do not mirror"
    patient_id: str = ""  # DICOM PatientID, only for the caller to hash at once; never store or show it


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name."""
    return head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def is_dicom_path(path) -> bool:
    try:
        with open(path, "rb") as f:
            return is_dicom(f.read(DICOM_MAGIC_OFFSET + 4))
    except OSError:
        return False


def load_rgb(source) -> Image.Image:
    """Bytes or a path to upright RGB; the function training, evaluation and prediction call."""
    return decode(source).rgb


def decode(source, *, max_pixels: int | None = None, max_decoded_bytes: int | None = None,
           accepted_formats=None) -> Decoded:
    """Bytes or a path to a Decoded image; any failure is a DecodeError with a sentence for the user.

    Both caps are checked from the header, before any pixel is decoded: `max_pixels` on width x
    height, `max_decoded_bytes` on pixels x channels x bytes a sample (high-bit-depth images get
    HIGH_DEPTH_SHARE of it)."""
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    data = bytes(data)
    caps = (max_pixels, max_decoded_bytes)
    if is_dicom(data):
        return _decode_dicom(data, caps)
    return _decode_pillow(data, caps, accepted_formats)


# --- ordinary image files --------------------------------------------------------------------

def _decode_pillow(data: bytes, caps, accepted_formats) -> Decoded:
    max_pixels, max_decoded_bytes = caps
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("This is not an image file we can read (JPEG, PNG, GIF, WebP, BMP, TIFF or DICOM).") from None
    except Image.DecompressionBombError:
        raise TooManyPixels(_too_many_pixels(max_pixels)) from None
    except Exception as exc:  # any decoder failure is this file's problem, never a server error
        raise DecodeError(f"The image is corrupt or truncated ({_reason(exc)}).") from None
    if accepted_formats is not None and image.format not in accepted_formats:
        raise DecodeError(f"{image.format} images are not supported; use JPEG, PNG, GIF, WebP, BMP, TIFF or DICOM.")
    _check_pixels(image.width, image.height, max_pixels)
    layout = ImageMode.getmode(image.mode)
    _check_decoded_size(image.width, image.height, len(layout.bands), np.dtype(layout.typestr).itemsize,
                        image.mode in _HIGH_DEPTH_MODES, max_decoded_bytes)
    try:
        image.load()  # decodes everything: truncated or corrupt files fail here, not during training
        grayscale = image.mode in ("1", "L", "LA", *_HIGH_DEPTH_MODES) or (image.mode == "P" and _palette_is_grey(image))
        rgb = to_rgb(image)
    except Image.DecompressionBombError:
        raise TooManyPixels(_too_many_pixels(max_pixels)) from None
    except Exception as exc:
        raise DecodeError(f"The image is corrupt or truncated, or uses an encoding we cannot decode ({_reason(exc)}).") from None
    return Decoded(rgb=rgb, format=image.format, width=image.width, height=image.height, grayscale=grayscale)


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright 8-bit RGB whatever the mode (palette, alpha, CMYK, 1-bit, 16-bit, float) and EXIF orientation."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(window_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode in ("RGBA", "LA", "P", "PA", "La", "RGBa"):
        # Flatten transparency onto white rather than letting it turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def window_to_uint8(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map values linearly so that [low, high] (default: the robust percentile window of the finite
    values) spans 0-255; a flat image becomes mid grey rather than a division by zero.

    The window comes from a regular sample and the mapping runs _WINDOW_CHUNK values at a time, so
    the memory it needs beyond its input and the 8-bit result is a few MB, whatever the size."""
    values = np.asarray(values)
    flat = values.reshape(-1)  # a view of the contiguous arrays decoders return
    work = _working_dtype(values.dtype)
    if low is None or high is None:
        window = _robust_window(flat, work)
        if window is None:  # nothing finite: black
            return np.zeros(values.shape, dtype=np.uint8)
        low, high = window
    elif _finite_extremes(flat, work) is None:
        return np.zeros(values.shape, dtype=np.uint8)
    if high <= low:  # a flat image: keep its place in its container's range (all-white stays white)
        full_scale = np.iinfo(values.dtype).max if np.issubdtype(values.dtype, np.integer) else 0
        level = 255 * low / full_scale if full_scale else 128
        return np.full(values.shape, int(np.clip(round(level), 0, 255)), dtype=np.uint8)
    out = np.empty(flat.shape, dtype=np.uint8)
    scale = 255.0 / (high - low)
    for start in range(0, flat.size, _WINDOW_CHUNK):
        chunk = flat[start:start + _WINDOW_CHUNK].astype(work)  # a copy: modified in place below
        np.nan_to_num(chunk, copy=False, nan=low, posinf=high, neginf=low)
        chunk -= low
        chunk *= scale
        np.clip(np.rint(chunk, out=chunk), 0, 255, out=chunk)
        out[start:start + _WINDOW_CHUNK] = chunk
    return out.reshape(values.shape)


def _working_dtype(dtype: np.dtype) -> type:
    """float32 holds every 8- and 16-bit value exactly (and float32 data as is); wider integers and
    float64 keep float64, or a narrow window on large values would lose its levels."""
    if dtype == np.bool_ or (np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2):
        return np.float32
    if np.issubdtype(dtype, np.floating) and dtype.itemsize <= 4:
        return np.float32
    return np.float64


def _robust_window(flat: np.ndarray, work) -> tuple[float, float] | None:
    """The LOW_PERCENTILE-HIGH_PERCENTILE window of a regular sample's finite values; min-max of
    the whole image when that window is empty (mostly one value: a mask, a blank field)."""
    sample = flat[::max(1, flat.size // _PERCENTILE_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size:
        low, high = (float(v) for v in np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE]))
        if high > low:
            return low, high
    return _finite_extremes(flat, work)


def _finite_extremes(flat: np.ndarray, work) -> tuple[float, float] | None:
    """The smallest and largest finite value, or None when there is none (a chunk at a time)."""
    if flat.size and not np.issubdtype(flat.dtype, np.floating):
        return float(flat.min()), float(flat.max())  # integers are all finite; no copy needed
    low = high = None
    for start in range(0, flat.size, _WINDOW_CHUNK):
        chunk = flat[start:start + _WINDOW_CHUNK]
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            low = float(finite.min()) if low is None else min(low, float(finite.min()))
            high = float(finite.max()) if high is None else max(high, float(finite.max()))
    return None if low is None else (low, high)


# --- DICOM -----------------------------------------------------------------------------------

def _decode_dicom(data: bytes, caps) -> Decoded:
    with warnings.catch_warnings():
        # pydicom warns while reading and whenever a value is first read (an invalid one is quoted,
        # and it may be a patient's): none of it goes to stderr or the logs.
        warnings.simplefilter("ignore")
        return _read_dicom(data, caps)


def _read_dicom(data: bytes, caps) -> Decoded:
    import pydicom  # imported here: only DICOM files pay for it
    from pydicom.errors import InvalidDicomError

    logging.getLogger("pydicom").setLevel(_PYDICOM_LOG_LEVEL)

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, Exception) as exc:
        raise DecodeError(f"This DICOM file is damaged and could not be read ({_reason(exc)}).") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError("This DICOM file holds no image (it may be a report, a structured document or a dose file).")
    try:  # header values a damaged file may hold as text ("1A"): its problem, not a server error
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"This DICOM file is damaged: its frame count or image size cannot be read ({_reason(exc)}).") from None
    if frames > 1:
        raise DecodeError(f"This DICOM file holds {frames} frames (a series or cine loop); "
                          "export each frame as its own file to use it here.")
    max_pixels, max_decoded_bytes = caps
    _check_pixels(columns, rows, max_pixels)
    _check_decoded_size(columns, rows, samples, max(1, -(-bits // 8)), bits > 8, max_decoded_bytes)
    try:
        array = ds.pixel_array
        rgb = _dicom_to_rgb(ds, array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown")
        raise DecodeError(f"The pixels of this DICOM file could not be decoded (transfer syntax “{name}”: "
                          f"{_reason(exc)}).") from None
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    return Decoded(rgb=rgb, format="DICOM", width=columns or rgb.width, height=rows or rgb.height,
                   grayscale=photometric.startswith("MONOCHROME"), patient_id=str(ds.get("PatientID", "") or ""))


def _dicom_to_rgb(ds, array: np.ndarray) -> Image.Image:
    from pydicom.pixels import apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        return _palette_to_rgb(ds, array)
    if not photometric.startswith("MONOCHROME"):
        # Colour (RGB, or YBR that pydicom has already converted to RGB): 8-bit data is shown as is.
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"unexpected colour array shape {array.shape}")
        if array.dtype != np.uint8:
            array = np.stack([window_to_uint8(array[..., c]) for c in range(3)], axis=-1)
        return Image.fromarray(np.ascontiguousarray(array), "RGB")
    values = _modality_values(ds, array) if "ModalityLUTSequence" not in ds else apply_modality_lut(array, ds)
    grey = _voi_window(ds, values)
    if photometric == "MONOCHROME1":  # high values mean dark in MONOCHROME1 (many CR/DX X-rays)
        grey = 255 - grey
    return Image.fromarray(grey, "L").convert("RGB")


def _modality_values(ds, array: np.ndarray) -> np.ndarray:
    """Stored values to physical units (e.g. Hounsfield) by the file's linear rescale, in float32 and
    in place: pydicom's apply_modality_lut makes a full-size float64 copy (a 5400x5400 study: +552 MB
    for one decode). Without a rescale the stored values are used as they are (no copy at all)."""
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        slope, intercept = 1.0, 0.0
    if slope == 1 and intercept == 0:
        return array
    values = array.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return values


def _palette_to_rgb(ds, array: np.ndarray) -> Image.Image:
    """PALETTE COLOR: each stored value indexes the file's own colour table (ultrasound, nuclear
    medicine), whose entries have the bit depth its descriptor gives (8 or 16)."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(array, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if bits > 8:
        rgb = rgb >> (bits - 8)
    return Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8)), "RGB")


def _voi_window(ds, values: np.ndarray) -> np.ndarray:
    """The file's own display range: its VOI LUT, else its first window centre/width, else the
    robust percentile window."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:
        return window_to_uint8(apply_voi_lut(values, ds, index=0))
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        # DICOM PS3.3 C.11.2.1.2.1, the LINEAR function: [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] -> 0-255.
        low = center - 0.5 - (width - 1) / 2
        return window_to_uint8(values, low, low + max(width - 1, 1))
    return window_to_uint8(values)


def _first_value(value):
    """WindowCenter/WindowWidth may hold several presets; the first is the default view."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- shared --------------------------------------------------------------------------------

def _check_pixels(width: int, height: int, max_pixels) -> None:
    if max_pixels and width * height > max_pixels:
        raise TooManyPixels(f"The image is {width}x{height} pixels, over the limit of {max_pixels / 1e6:.0f} megapixels.")


def decoded_bytes(width: int, height: int, channels: int, bytes_per_sample: int) -> int:
    return width * height * channels * bytes_per_sample


def decoded_bytes_cap(max_decoded_bytes: int, high_depth: bool) -> int:
    """The decoded-size cap for an image: high-bit-depth ones get HIGH_DEPTH_SHARE of it."""
    return int(max_decoded_bytes * HIGH_DEPTH_SHARE) if high_depth else max_decoded_bytes


def _check_decoded_size(width: int, height: int, channels: int, bytes_per_sample: int, high_depth: bool,
                        max_decoded_bytes) -> None:
    if not max_decoded_bytes:
        return
    size, cap = decoded_bytes(width, height, channels, bytes_per_sample), decoded_bytes_cap(max_decoded_bytes, high_depth)
    if size > cap:
        depth = f"{8 * bytes_per_sample}-bit " if high_depth else ""
        raise TooManyPixels(
            f"The image is {width}x{height} pixels of {channels} {depth}channel{'s' if channels > 1 else ''}: "
            f"{size / 1e6:.0f} MB once decoded, over the limit of {cap / 1e6:.0f} MB for "
            f"{'high-bit-depth (16/32-bit, float)' if high_depth else '8-bit'} images. "
            f"Make it smaller{' or save it at 8 bits' if high_depth else ''}.")


def _too_many_pixels(max_pixels) -> str:
    limit = f" (limit {max_pixels / 1e6:.0f} megapixels)" if max_pixels else ""
    return f"The image has too many pixels{limit}."


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__
