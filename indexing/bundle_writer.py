"""Writing an index bundle: its files, bundle.json with their checksums, and where a new version is staged.

Every build and every change writes a whole new bundle beside the old one and swaps it in
(``artlens.files.moved_into_place``); reading it back is artlens.indexing.store.bundle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from artlens.errors import BundleError
from artlens.files import staging_directory
from artlens.hashing import file_sha256
from artlens.indexing.store.bundle import (
    FEATURE_FILES,
    FORMAT,
    GLOBAL_EMBEDDING_FILES,
    VOTES_FILE,
    ReferenceFeatures,
    has_global_embedding,
)
from artlens.indexing.store.footprint import compute_footprint
from artlens.indexing.store.segments import segment_files
from artlens.local_features import bundle_model_files

from .renditions import stored_files


def write_bundle_files(staging: Path, meta: dict, artworks: list[dict], embeddings: np.ndarray | None,
                       index: faiss.Index | None, features: ReferenceFeatures, vocabulary: np.ndarray,
                       local_index: faiss.Index, votes: faiss.Index | None = None) -> None:
    """Write every file into ``staging`` (a fresh directory) and then bundle.json with their checksums.
    ``votes`` needs bundle.json's "votes" description in ``meta`` (and the other way round); ``embeddings`` and
    ``index`` are None exactly when ``meta`` says the bundle has no global embeddings."""
    if (votes is None) != (not meta.get("votes")):
        raise ValueError("a vote index and bundle.json's 'votes' description go together")
    if (embeddings is None or index is None) == has_global_embedding(meta):
        raise ValueError("global embeddings and their index go with bundle.json's model.global_embedding")
    (staging / "features").mkdir(parents=True, exist_ok=True)
    (staging / "artworks.json").write_text(json.dumps(artworks, ensure_ascii=False, indent=1))
    if embeddings is not None:
        np.save(staging / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        faiss.write_index(index, str(staging / "index.faiss"))
    np.save(staging / "vocabulary.npy", vocabulary)
    faiss.write_index(local_index, str(staging / "local_index.faiss"))
    for name, array in (("keypoints.npy", features.keypoints), ("descriptors.npy", features.descriptors)):
        if not is_mapped_from(array, staging / "features" / name):  # the merge may have written them there already
            np.save(staging / "features" / name, array)
    np.save(staging / "features" / "offsets.npy", features.offsets)
    np.save(staging / "features" / "sizes.npy", features.sizes)
    if votes is not None:
        faiss.write_index(votes, str(staging / VOTES_FILE))
    write_meta(staging, meta)


def is_mapped_from(array: np.ndarray, path: Path) -> bool:
    """Whether ``array`` is a memory map of the whole array in the file at ``path`` (saving it there would truncate
    what it reads)."""
    filename = getattr(array, "filename", None)
    if filename is None or not path.exists() or Path(filename).resolve() != path.resolve():
        return False
    whole = np.load(path, mmap_mode="r")
    return whole.shape == array.shape and whole.dtype == array.dtype and whole.offset == array.offset


def write_meta(directory: Path, meta: dict) -> None:
    """(Re)write bundle.json with fresh checksums of the data files and the bundle's ``footprint`` (bytes on disk
    and in RAM per component, indexing/store/footprint.py); atomic by rename within the directory. Every writer of
    a bundle (build, admin changes, calibration, added votes or renditions) ends here, so both are always current."""
    files = ["artworks.json", *(GLOBAL_EMBEDDING_FILES if has_global_embedding(meta) else ()), "vocabulary.npy",
             "local_index.faiss"]
    files += [f"features/{f}" for f in FEATURE_FILES]
    if meta.get("votes"):
        files.append(VOTES_FILE)
    if meta.get("segments"):
        files += segment_files(meta["segments"])
    files += bundle_model_files(meta)  # a learned local-feature model's copy: queries are described by it
    artworks = json.loads((directory / "artworks.json").read_text(encoding="utf-8"))
    files += stored_files(artworks)  # renditions and stored originals: checked like every other file
    meta = {**meta, "format": FORMAT, "checksums": {f: file_sha256(directory / f) for f in files}}
    meta["footprint"] = compute_footprint(directory, meta, len(artworks))
    tmp = directory / "bundle.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    os.replace(tmp, directory / "bundle.json")


def staging_dir(out: Path) -> Path:
    """Where a bundle for ``out`` is built before it is moved into place (``artlens.files.moved_into_place``)."""
    return staging_directory(out, "building")


def check_replaceable(out: Path) -> None:
    """Only a bundle (or nothing, or an empty directory) may be replaced: never a folder of someone's files."""
    if out.exists() and not (out / "bundle.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError("exists and is not an index bundle; refusing to replace it (choose another --out)", path=out)
