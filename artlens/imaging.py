"""Decode photos and catalogue images into RGB arrays, safely.

Every decoder failure becomes an :class:`ImageError` naming the input in our own words (never the decoder's
message, which names its internals): a photo from a phone or a row of a collection must never crash a build or
a request. Orientation from EXIF is applied exactly once, here.

Memory: the analysis never looks at more than ``max_side`` pixels, so a large image is never kept at full size.
JPEGs are decoded at a reduced DCT scale (``draft``); other formats are decoded, then scaled down before anything
else copies them. What decoding still costs is counted by an optional :class:`DecodeBudget` shared by
concurrent callers (the service), and the freed heap is handed back to the OS after large decodes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from artlens.errors import ArtlensError, ImageError

try:  # HEIC/HEIF from iPhones; optional at import time so a broken wheel does not take the service down
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - depends on the platform wheel
    pillow_heif = None

# A 12-megapixel phone photo is ~12 Mpx; gallery scans reach ~100 Mpx. Beyond this we refuse before decoding.
MAX_PIXELS = 120_000_000
MAX_BYTES = 64 * 1024 * 1024
# Pillow refuses images above twice MAX_IMAGE_PIXELS while opening them, before our check can run; a limit
# asked of load_image is capped there so that the limit an error names is always the one that applied.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
DECODE_PIXEL_CAP = 2 * MAX_PIXELS
# Pillow's warning between MAX_IMAGE_PIXELS and the cap says nothing our exact check does not.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

JPEG_FORMATS = {"JPEG", "MPO"}  # MPO: the JPEG with extra views some cameras write (the first is the photo)
# Full-size copies a decoder holds at once, in units of one Pillow RGB image (4 bytes per pixel): libwebp keeps
# its canvas and the previous frame, and Pillow copies the result twice; libheif's output is copied once.
DECODER_COPIES = {"WEBP": 4, "HEIF": 2, "AVIF": 2}
# A decode of at least this many pixels frees enough heap for handing it back to the OS to be worth a call.
RELEASE_AFTER_PIXELS = 4_000_000
# Modes Pillow scales in place with the result _to_rgb would give afterwards (premultiplied alpha for RGBA/LA).
SCALABLE_MODES = {"RGB", "L", "RGBA", "LA"}


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image as uint8 ``[H, W, 3]`` plus the size it had in the file (after EXIF rotation)."""

    rgb: np.ndarray
    original_size: tuple[int, int]  # (width, height) at full resolution, upright
    decoded_pixels: int = 0  # what the decoder materialised (see DecodeBudget), for tests and budgets


class DecodeBusy(ArtlensError):
    """Decoding this image now would take the pixels being decoded at once above the budget."""

    code = "overloaded"


class DecodeBudget:
    """Pixels being decoded at once, across threads (the service's concurrent requests).

    A decode is counted from the image header, before any pixel is decoded, for as long as its full-size buffers
    live. One that would take the total above ``limit`` is refused (:class:`DecodeBusy`) instead of queued, unless
    nothing else is decoding: a single image under the pixel limit can always be decoded on an idle server.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        with self._lock:
            if self.in_flight and self.in_flight + pixels > self.limit:
                raise DecodeBusy(f"the server is decoding {self.in_flight} pixels of other images; this one"
                                 f" ({pixels} pixels) would take it above its budget of {self.limit}")
            self.in_flight += pixels
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= pixels


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (not musl, macOS or Windows)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Hand the heap's free pages back to the OS. glibc keeps freed memory in its per-thread arenas, so a few
    large decodes on several threads would otherwise leave the process's RSS high for good. False where the C
    library has no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """Decode ``source`` (a path or encoded bytes) to upright RGB.

    ``max_side``: the longer side of the result is at most this; JPEGs are decoded at a reduced DCT scale and
    large images of other formats are scaled down right after decoding. ``budget``: counts this decode among
    concurrent ones (:class:`DecodeBusy` when over). ``name`` is used in error messages.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    max_pixels = min(max_pixels, DECODE_PIXEL_CAP)
    data = _read_bytes(source, label, max_bytes)
    # The opened image is handed over without a name kept here, so _decode can free it as soon as it is scaled.
    return _decode(_open(data, label, max_pixels), label, max_side, max_pixels, budget)


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(label, "not a recognised image format (expected JPEG, PNG, WebP, HEIC…)",
                         code="unsupported_image") from None
    except Image.DecompressionBombError:
        raise ImageError(label, f"image is too large (above the limit of {max_pixels} pixels)",
                         code="image_too_large") from None
    except Exception as exc:  # Pillow raises many types for malformed headers; its messages name its internals
        raise ImageError(label, _corrupt("image header is corrupt or truncated", exc),
                         code="undecodable_image") from None


def _corrupt(what: str, exc: Exception) -> str:
    """Our words for a decoder failure (the decoder's message is for developers, not for the sender)."""
    if "TEXT_CHUNK" in str(exc) or "text chunk" in str(exc):
        return "a PNG text (metadata) chunk is too large to read; remove the metadata and send the image again"
    return what


def _read_bytes(source: str | Path | bytes, label: str, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(label, "file not found", code="missing_image")
        if not path.is_file():
            raise ImageError(label, "not a regular file", code="missing_image")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(label, f"file is {size} bytes, above the {max_bytes}-byte limit",
                             code="image_too_large")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(label, f"cannot read file: {exc.strerror}", code="missing_image") from None
    if len(data) == 0:
        raise ImageError(label, "empty file (0 bytes)", code="undecodable_image")
    if len(data) > max_bytes:
        raise ImageError(label, f"{len(data)} bytes, above the {max_bytes}-byte limit", code="image_too_large")
    return data


def _decode(img: Image.Image, label: str, max_side: int | None, max_pixels: int,
            budget: DecodeBudget | None) -> DecodedImage:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(label, "image has no pixels", code="undecodable_image")
    if width * height > max_pixels:
        raise ImageError(label, f"{width}x{height} pixels is too large (limit {max_pixels} pixels)",
                         code="image_too_large")
    if getattr(img, "n_frames", 1) > 1 and img.format in {"GIF", "PNG", "WEBP"}:
        raise ImageError(label, f"animated {img.format} with {img.n_frames} frames; send a still photo",
                         code="unsupported_image")
    try:
        if max_side is not None and img.format in JPEG_FORMATS:
            # Decode at 1/2, 1/4 or 1/8 DCT scale while staying at or above the requested size.
            scale = max_side / max(width, height)
            img.draft("RGB", (int(width * scale), int(height * scale)))
    except Exception as exc:
        raise ImageError(label, _corrupt("image data is corrupt or truncated", exc),
                         code="undecodable_image") from None
    pixels = _decoded_pixels(img, width * height)
    with budget.reserve(pixels) if budget is not None else nullcontext():
        try:
            img.load()
        except Exception as exc:
            raise ImageError(label, _corrupt("image data is corrupt or truncated", exc),
                             code="undecodable_image") from None
        # After load: reading a PNG's EXIF decodes the whole image, which must be counted and fail loudly.
        orientation = _exif_orientation(img)
        upright_size = (width, height) if orientation < 5 else (height, width)
        if max_side is not None and max(img.size) >= 2 * max_side:
            # Far larger than the analysis needs: scale down first, so that neither the rotation nor the colour
            # conversion copies it at full size, and let the full-size image go.
            if img.mode not in SCALABLE_MODES:
                img = _to_rgb(img, label)
            img = _fit(img, max_side)
        img = _apply_orientation(img, orientation)
        rgb = _to_rgb(img, label)
        del img
        if max_side is not None and max(rgb.size) > max_side:
            rgb = _fit(rgb, max_side)
        array = np.asarray(rgb, dtype=np.uint8)
        del rgb
    if pixels >= RELEASE_AFTER_PIXELS:
        release_memory()
    return DecodedImage(rgb=array, original_size=upright_size, decoded_pixels=pixels)


def _decoded_pixels(img: Image.Image, full_pixels: int) -> int:
    """Pixels the decoder materialises, from the header (after ``draft``): a baseline JPEG is decoded at its
    reduced scale; a progressive JPEG keeps whole-image DCT coefficients (2 bytes per sample) whatever the scale;
    other formats decode at full size, some with several copies."""
    if img.format in JPEG_FORMATS:
        if img.info.get("progressive") or img.info.get("progression"):
            return full_pixels
        return img.size[0] * img.size[1]
    return full_pixels * DECODER_COPIES.get(img.format or "", 1)


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` scaled so its longer side is ``max_side``."""
    scale = max_side / max(img.size)
    new_size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
    return img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # huge or malformed EXIF blocks: ignore orientation rather than fail the photo
        return 1


_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    for op in _TRANSPOSE.get(orientation, ()):
        img = img.transpose(op)
    return img


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        # 16-bit greyscale: scale the used range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (mode == "P" and "transparency" in img.info):
        # Transparent areas become white (the colour of a catalogue page), not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, P, CMYK (Pillow applies the inversion Adobe JPEGs need), YCbCr, LAB…
    except Exception:
        raise ImageError(label, f"cannot convert colour mode {mode} to RGB", code="unsupported_image") from None


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as uint8, what OpenCV's feature detectors expect."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
