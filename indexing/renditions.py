"""Writing each artwork's reference-image rendition into the bundle, so a served bundle needs nothing outside it.

One JPEG per artwork, ``renditions/<sha256[:32]>.jpg`` (longest side ``RENDITION_SIDE``, never upscaled, EXIF
orientation applied), named by its content and recorded in ``artworks.json`` as ``rendition``; bundle.json
checksums it. Reading one back (checked again) and smaller sizes: artlens.indexing.store.renditions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from artlens.imaging import load_image
from artlens.indexing.store.renditions import RENDITION_QUALITY, encode_jpeg

RENDITION_DIR = "renditions"
RENDITION_SIDE = 1024


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


def describe(directory: Path, artworks: list[dict]) -> dict:
    """bundle.json's ``renditions`` entry: what is stored and what it costs on disk."""
    files = sorted({art["rendition"] for art in artworks if art.get("rendition")})
    total = sum((directory / rel).stat().st_size for rel in files)
    return {"dir": RENDITION_DIR, "max_side": RENDITION_SIDE, "quality": RENDITION_QUALITY, "format": "jpeg",
            "count": len(files), "without": sum(1 for art in artworks if not art.get("rendition")),
            "bytes": total}
