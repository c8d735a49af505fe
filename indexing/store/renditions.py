"""Reading a stored rendition back: checked against bundle.json's checksum, and derived at smaller sizes.

Written by indexing/renditions.py. A missing or altered rendition is :class:`RenditionUnavailable`, a server
fault (the service answers ``image_unavailable``).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from artlens.errors import ArtlensError
from artlens.imaging import load_image

RENDITION_QUALITY = 85


class RenditionUnavailable(ArtlensError):
    """A stored rendition is missing, altered, or unreadable (a server fault, not the client's)."""

    code = "image_unavailable"


def encode_jpeg(rgb, quality: int = RENDITION_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def read_verified(bundle_path: Path, rel: str, checksums: dict[str, str]) -> bytes:
    """A stored rendition's bytes, checked against bundle.json's checksum; any problem is
    :class:`RenditionUnavailable` (its message is for the operator's log: it names the file)."""
    expected = checksums.get(rel)
    if expected is None:
        raise RenditionUnavailable(f"{bundle_path}: {rel} has no checksum in bundle.json")
    try:
        data = (bundle_path / rel).read_bytes()
    except OSError as exc:
        raise RenditionUnavailable(f"{bundle_path / rel}: cannot read ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise RenditionUnavailable(f"{bundle_path / rel}: does not match its checksum (corrupted or edited)")
    return data


def derive(data: bytes, size: int, *, stored: bool, name: str) -> bytes:
    """The JPEG to serve at longer side ``size``: a stored rendition as it is when it is no larger than that,
    otherwise decoded, downscaled and re-encoded (a recorded source image always is)."""
    if stored:
        try:
            with Image.open(io.BytesIO(data)) as img:
                if max(img.size) <= size:
                    return data
        except Exception as exc:  # Pillow raises many types for a damaged header
            raise RenditionUnavailable(f"{name}: unreadable ({type(exc).__name__})") from None
    return encode_jpeg(load_image(data, name=name, max_side=size).rgb)
