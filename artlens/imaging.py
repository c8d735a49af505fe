"""Decode photos and catalogue images into RGB arrays, safely.

Every decoder failure becomes an :class:`ImageError` naming the input: a photo from a phone or a row of a
collection must never crash a build or a request. Orientation from EXIF is applied exactly once, here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from artlens.errors import ImageError

try:  # HEIC/HEIF from iPhones; optional at import time so a broken wheel does not take the service down
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - depends on the platform wheel
    pillow_heif = None

# A 12-megapixel phone photo is ~12 Mpx; gallery scans reach ~100 Mpx. Beyond this we refuse before decoding.
MAX_PIXELS = 120_000_000
MAX_BYTES = 64 * 1024 * 1024
# Pillow's own bomb check warns at MAX_IMAGE_PIXELS and fails at twice that; ours is explicit and earlier.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image as uint8 ``[H, W, 3]`` plus the size it had in the file (after EXIF rotation)."""

    rgb: np.ndarray
    original_size: tuple[int, int]  # (width, height) at full resolution, upright


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> DecodedImage:
    """Decode ``source`` (a path or encoded bytes) to upright RGB.

    ``max_side`` lets JPEG decoding run at a reduced DCT scale (much faster for 12 Mpx photos) and then
    resizes so the longer side is at most ``max_side``. ``name`` is used in error messages.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    data = _read_bytes(source, label, max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(label, "not a recognised image format (expected JPEG, PNG, WebP, HEIC…)",
                             code="unsupported_image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(label, f"image too large to decode safely ({exc})", code="image_too_large") from None
        except Exception as exc:  # Pillow raises many types for malformed headers
            raise ImageError(label, f"image header is corrupt or truncated ({exc})", code="undecodable_image") from None
        return _decode(img, label, max_side, max_pixels)


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


def _decode(img: Image.Image, label: str, max_side: int | None, max_pixels: int) -> DecodedImage:
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
        orientation = _exif_orientation(img)
        if max_side is not None and img.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 DCT scale while staying at or above the requested size.
            scale = max_side / max(width, height)
            img.draft("RGB", (int(width * scale), int(height * scale)))
        img.load()
    except Exception as exc:
        raise ImageError(label, f"image data is corrupt or truncated ({exc})", code="undecodable_image") from None
    img = _apply_orientation(img, orientation)
    upright_size = (width, height) if orientation < 5 else (height, width)
    rgb = _to_rgb(img, label)
    if max_side is not None and max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        new_size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
        rgb = rgb.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return DecodedImage(rgb=np.asarray(rgb, dtype=np.uint8), original_size=upright_size)


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
    except Exception as exc:
        raise ImageError(label, f"cannot convert colour mode {mode} to RGB ({exc})",
                         code="unsupported_image") from None


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as uint8, what OpenCV's feature detectors expect."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
