"""Labelled photos from a queries CSV: `image,expected` with `expected` a ';'-separated list of object ids."""

from __future__ import annotations

import csv
from pathlib import Path

from artlens.errors import CollectionError
from artlens.indexing.store.bundle import Bundle

from .photos import LabelledPhoto


def read_queries(path: str | Path) -> list[tuple[int, Path, list[str]]]:
    """(CSV line, photo path, expected object ids) per row; paths relative to the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise CollectionError(f"{path}: queries CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"image", "expected"} <= {c.strip() for c in reader.fieldnames}:
            raise CollectionError(f"{path}: header must be image,expected (found {reader.fieldnames})")
        rows = []
        for line, rec in enumerate(reader, start=2):
            image = (rec.get("image") or "").strip()
            if not image:
                raise CollectionError(f"{path}:{line}: empty image")
            expected = [e.strip() for e in (rec.get("expected") or "").split(";") if e.strip()]
            photo = Path(image) if Path(image).is_absolute() else path.parent / image
            rows.append((line, photo, expected))
    return rows


def write_queries(path: Path, rows) -> Path:
    """``path`` as a queries CSV (``image,expected``; ``expected`` ';'-separated, empty = no match)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "expected"])
        writer.writerows(rows)
    return path


def labelled_photos(path: str | Path, bundle: Bundle) -> list[LabelledPhoto]:
    """Queries as bundle rows; an expected id the bundle lacks is an error (the label could never be met)."""
    photos = []
    for line, photo, expected in read_queries(path):
        unknown = [e for e in expected if e not in bundle.rows]
        if unknown:
            raise CollectionError(f"{path}:{line}: expected id(s) {', '.join(unknown)} are not in bundle {bundle.path}")
        photos.append(LabelledPhoto(photo, frozenset(bundle.rows[e] for e in expected), str(photo)))
    return photos
