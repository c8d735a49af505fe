"""Simulated visitor photos of a collection's artworks, written as JPEG files plus a queries.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from artlens.errors import ArtlensError, CollectionError
from artlens.imaging import load_image
from artlens.indexing.collection import fetch_bytes, read_collection, resolve_image
from artlens.recognition.calibrate import simulate_visitor_photo


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
        try:
            rgb = load_image(fetch_bytes(resolve_image(collection.path, row.image)), name=row.image,
                             max_side=1600).rgb
        except ArtlensError as exc:
            raise CollectionError(f"{collection.path}:{row.number}: {exc}") from None
        name = f"visitor-{n:03d}-{row.object_id}.jpg".replace("/", "_")
        (out / name).write_bytes(simulate_visitor_photo(rgb, rng))
        lines.append((name, row.object_id))
    queries = out / "queries.csv"
    with open(queries, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "expected"])
        writer.writerows(lines)
    return queries
