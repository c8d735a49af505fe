"""Simulated visitor photos of a collection's artworks, written as JPEG files plus a queries.csv."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.calibration.photos import simulate_visitor_photo
from artlens.calibration.queries import write_queries
from artlens.errors import CollectionError
from artlens.indexing.collection import load_row_image, read_collection


def simulate_collection_photos(collection_csv: str | Path, out_dir: str | Path, *, count: int, seed: int = 0) -> Path:
    collection = read_collection(collection_csv)
    if not collection.rows:
        raise CollectionError(f"{collection_csv}: no rows to photograph")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(collection.rows), size=min(count, len(collection.rows)), replace=False)
    lines = []
    for n, i in enumerate(sorted(picks.tolist()), start=1):
        row = collection.rows[i]
        rgb = load_row_image(collection, row, max_side=1600)
        name = f"visitor-{n:03d}-{row.object_id}.jpg".replace("/", "_")
        (out / name).write_bytes(simulate_visitor_photo(rgb, rng))
        lines.append((name, row.object_id))
    return write_queries(out / "queries.csv", lines)


def _load_rows(collection_csv: str | Path, ids: list[str] | None) -> list[tuple[str, np.ndarray]]:
    """(object_id, RGB) for the collection's rows (only ``ids`` when given, in that order)."""
    collection = read_collection(collection_csv)
    if collection.problems:
        line, reason = collection.problems[0]
        raise CollectionError(f"{collection_csv}:{line}: {reason}")
    by_id = {row.object_id: row for row in collection.rows}
    if ids is not None:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise CollectionError(f"{collection_csv}: object id(s) {', '.join(missing[:5])} are not in the collection")
    rows = [by_id[i] for i in ids] if ids is not None else collection.rows
    out = []
    for row in rows:
        rgb = load_row_image(collection, row, max_side=1600)
        out.append((row.object_id, rgb))
    return out


def simulate_visitor_set(collection_csv: str | Path, out_dir: str | Path, *, seed: int = 0,
                         severity: str = "default", photos_per_artwork: int = 1, ids: list[str] | None = None,
                         distractors_csv: str | Path | None = None, distractor_ids: list[str] | None = None,
                         distractor_photos: int = 1, progress: Callable[[int, int], None] | None = None) -> Path:
    """kornia-simulated visitor photos (eval/visitor.py) of a collection's artworks, plus photos of
    ``distractors_csv``'s artworks (expected: no match), as JPEGs and a queries.csv. Reproducible per seed."""
    from .visitor import simulate_photos

    sources = [(oid, rgb, oid) for oid, rgb in _load_rows(collection_csv, ids)] * photos_per_artwork
    if distractors_csv is not None:
        sources += [(oid, rgb, "") for oid, rgb in _load_rows(distractors_csv, distractor_ids)] * distractor_photos
    if not sources:
        raise CollectionError(f"{collection_csv}: no artworks to photograph")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines, batch = [], 16  # photos are rendered in batches; each seed draw is per photo, so batching never matters
    for start in range(0, len(sources), batch):
        chunk = sources[start:start + batch]
        photos = simulate_photos([rgb for _, rgb, _ in chunk], seed=seed, level=severity, first_index=start)
        for n, ((oid, _, expected), photo) in enumerate(zip(chunk, photos, strict=True), start=start + 1):
            name = f"{severity}-{n:04d}-{oid}.jpg".replace("/", "_")
            (out / name).write_bytes(photo.jpeg)
            lines.append((name, expected))
        if progress:
            progress(min(start + batch, len(sources)), len(sources))
    return write_queries(out / "queries.csv", lines)


def simulate_visitor_sample(collection_csv: str | Path, out_dir: str | Path, *, count: int, seed: int,
                            severity: str) -> Path:
    """:func:`simulate_visitor_set` of ``count`` artworks of the collection, picked at random with ``seed``."""
    from .visitor import severity as check_severity

    check_severity(severity)
    rows = read_collection(collection_csv).rows
    picks = np.random.default_rng(seed).choice(len(rows), size=min(count, len(rows)), replace=False)
    return simulate_visitor_set(collection_csv, out_dir, seed=seed, severity=severity,
                                ids=[rows[i].object_id for i in sorted(picks.tolist())])
