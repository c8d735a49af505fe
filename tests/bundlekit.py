"""Turn a built bundle into what a deployment meets: a bundle whose source images are gone (a container that mounts
only the bundle), or one built before renditions existed. Checksums are refreshed: the bundle itself stays sound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from artlens.indexing.bundle_writer import write_meta
from artlens.indexing.store.bundle import read_meta

GONE = "/nonexistent-artlens-sources"  # where the sources "were": a path that exists on no machine


def without_sources(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle`` at ``target`` whose recorded source images (and collection CSV) are unreachable."""
    shutil.copytree(bundle, target)
    artworks = json.loads((target / "artworks.json").read_text())
    for art in artworks:
        art["image"] = f"{GONE}/{Path(art['image']).name}"
    (target / "artworks.json").write_text(json.dumps(artworks))
    meta = read_meta(target)
    meta["collection"]["csv"] = f"{GONE}/collection.csv"
    write_meta(target, meta)
    return target


def without_renditions(bundle: Path) -> None:
    """Turn ``bundle`` (in place) into one built before renditions existed."""
    artworks = json.loads((bundle / "artworks.json").read_text())
    for art in artworks:
        art.pop("rendition", None)
    (bundle / "artworks.json").write_text(json.dumps(artworks))
    shutil.rmtree(bundle / "renditions")
    meta = read_meta(bundle)
    meta.pop("renditions", None)
    write_meta(bundle, meta)
