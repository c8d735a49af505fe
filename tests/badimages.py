"""Malformed and unusual images, made in memory (shared by the imaging, CLI and build tests)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg_bytes(size=(64, 48), mode="RGB", **save) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width×height pixels (a decompression bomb's header) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).convert("P") for value in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def huge_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription near the 64 KB APP1 limit
    exif[0x0112] = 1
    return jpeg_bytes(exif=exif.tobytes())


def rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(size=(40, 20), exif=exif.tobytes())


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


BAD_INPUTS = {
    "not an image": (b"hello, I am a text file\n" * 10, "not a recognised image format"),
    "truncated JPEG": (jpeg_bytes((256, 256))[:600], "corrupt or truncated"),
    "0 bytes": (b"", "empty file"),
    "20000x20000 PNG": (png_header_only(20000, 20000), "too large"),
    "animated GIF": (animated_gif(), "animated GIF"),
}
