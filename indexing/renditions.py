"""Reference-image renditions stored inside the bundle, so a served bundle needs nothing outside itself.

Every artwork gets one JPEG, ``renditions/<sha256[:32]>.jpg`` (longest side ``RENDITION_SIDE``, never upscaled,
EXIF orientation applied), named by its content and recorded in its ``artworks.json`` row as ``rendition``.
``index build`` and the admin add write it; delete drops it with the row; ``artlens index renditions`` gives an
older bundle its renditions. bundle.json checksums every stored file (renditions and the originals the admin
add keeps in ``images/``) like the rest of the bundle, and the service checks a rendition's checksum again
each time it reads one from disk. Smaller sizes are derived from the stored rendition on request.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from PIL import Image

from artlens.errors import ArtlensError
from artlens.imaging import load_image

RENDITION_DIR = "renditions"
RENDITION_SIDE = 1024
RENDITION_QUALITY = 85


class RenditionUnavailable(ArtlensError):
    """A stored rendition is missing, altered, or unreadable (a server fault, not the client's)."""

    code = "image_unavailable"


def encode_jpeg(rgb, quality: int = RENDITION_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def make_rendition(data: bytes, *, name: str) -> bytes:
    """The stored rendition of an image file's bytes (any format ``load_image`` reads)."""
    return encode_jpeg(load_image(data, name=name, max_side=RENDITION_SIDE).rgb)


def rendition_name(jpeg: bytes) -> str:
    """Where a rendition lives in the bundle: named by its content."""
    return f"{RENDITION_DIR}/{hashlib.sha256(jpeg).hexdigest()[:32]}.jpg"


def write_rendition(directory: Path, jpeg: bytes) -> str:
    """Write ``jpeg`` under ``directory/renditions/`` by content; returns its path relative to the bundle."""
    rel = rendition_name(jpeg)
    (directory / RENDITION_DIR).mkdir(parents=True, exist_ok=True)
    (directory / rel).write_bytes(jpeg)
    return rel


def stored_files(artworks: list[dict]) -> list[str]:
    """Files the bundle stores for its artworks (renditions, admin-added originals), relative to the bundle."""
    names = {art[key] for art in artworks for key in ("rendition", "stored_image") if art.get(key)}
    return sorted(names)


def stored_files_in(directory: Path) -> list[str]:
    """:func:`stored_files` of the bundle in ``directory`` (read from its artworks.json)."""
    return stored_files(json.loads((directory / "artworks.json").read_text()))


def describe(directory: Path, artworks: list[dict]) -> dict:
    """bundle.json's ``renditions`` entry: what is stored and what it costs on disk."""
    files = sorted({art["rendition"] for art in artworks if art.get("rendition")})
    total = sum((directory / rel).stat().st_size for rel in files)
    return {"dir": RENDITION_DIR, "max_side": RENDITION_SIDE, "quality": RENDITION_QUALITY, "format": "jpeg",
            "count": len(files), "without": sum(1 for art in artworks if not art.get("rendition")),
            "bytes": total}


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
