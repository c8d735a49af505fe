"""What a bundle costs: bytes on disk and bytes a loaded bundle holds in RAM, per component, in total and per artwork.

Computed from the bundle's files and bundle.json alone (no FAISS index is read), so a build can record it as
bundle.json ``footprint`` and ``artlens index info`` can compute it for bundles written before that key.

How RAM is counted, per file (what ``load_bundle`` does with it):
- memory-mapped arrays (``np.load(mmap_mode="r")``: local features, embeddings, segment vectors and detail
  features): 0 — they stay on disk and the pages a candidate needs are read per query;
- fully loaded arrays: their ``nbytes`` (shape × item size from the .npy header);
- FAISS indexes: the serialized file size. ``faiss.read_index`` reads every structure the file holds (flat codes,
  HNSW links, inverted lists' codes and ids, coarse centroids, PCA matrices) into memory, and the file holds exactly
  those bytes plus a few header fields per structure; growth slack of FAISS's vectors is not counted;
- JSON parsed into Python objects (artworks.json, segments.json): the text's size, a lower bound (Python objects
  take several times the text);
- the local-feature model's ONNX file: its size, a lower bound (ONNX Runtime adds its working memory);
- renditions, stored originals and any other file: 0 (read per request).
bundle.json itself is not counted (it would hold its own size); the table covers every other file of the bundle.
The per-artwork share of a component is its bytes / the artworks; the fixed costs (vocabulary, PCA projection, vote
centroids, the local-feature model) do not grow with the collection and are reported apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artlens.errors import BundleError

MANIFEST = "bundle.json"
NOT_COUNTED = (MANIFEST, MANIFEST + ".tmp")  # the manifest, and its rename-in-place temporary
# A build's per-shard scratch (indexing/shards.py), in the staging directory while bundle.json is first written and
# removed before the bundle is moved into place: never part of a bundle.
BUILD_SCRATCH = "shards"
FLOAT32 = 4

MMAP, NBYTES, FAISS, JSON_TEXT, ONNX_FILE, NOT_LOADED = (
    "mmap", "nbytes", "faiss serialized", "json text (lower bound)", "onnx file (lower bound)", "not loaded")


@dataclass(frozen=True)
class Part:
    """One row of the table: a component of the bundle, its files, and how each byte of it is held."""

    name: str
    per_artwork: bool  # grows with the artworks (False: a fixed cost of the bundle)
    ram_basis: str


# Relative path (or its folder, ending in "/") → component. Files in none of these count as "other files".
PARTS: dict[str, Part] = {
    "features/keypoints.npy": Part("local features (keypoints, descriptors)", True, MMAP),
    "features/descriptors.npy": Part("local features (keypoints, descriptors)", True, MMAP),
    "features/offsets.npy": Part("local feature rows (offsets, sizes)", True, NBYTES),
    "features/sizes.npy": Part("local feature rows (offsets, sizes)", True, NBYTES),
    "local_index.faiss": Part("VLAD vectors (local_index.faiss)", True, FAISS),
    "vocabulary.npy": Part("vocabulary (visual words)", False, NBYTES),
    "votes.faiss": Part("descriptor votes (votes.faiss)", True, FAISS),
    "embeddings.npy": Part("global embeddings", True, MMAP),
    "index.faiss": Part("global index (index.faiss)", True, FAISS),
    "artworks.json": Part("metadata (artworks.json)", True, JSON_TEXT),
    "segments/segments.json": Part("segments: records (segments.json)", True, JSON_TEXT),
    "segments/artwork.npy": Part("segments: RAM arrays and indexes", True, NBYTES),
    "segments/local.npy": Part("segments: RAM arrays and indexes", True, NBYTES),
    "segments/index.faiss": Part("segments: RAM arrays and indexes", True, FAISS),
    "segments/local_index.faiss": Part("segments: RAM arrays and indexes", True, FAISS),
    "segments/local_pca.npz": Part("segments: PCA projection", False, NBYTES),
    "segments/vectors.npy": Part("segments: memory-mapped (vectors, detail features)", True, MMAP),
    "segments/detail_keypoints.npy": Part("segments: memory-mapped (vectors, detail features)", True, MMAP),
    "segments/detail_descriptors.npy": Part("segments: memory-mapped (vectors, detail features)", True, MMAP),
    "segments/detail_offsets.npy": Part("segments: memory-mapped (vectors, detail features)", True, MMAP),
    "renditions/": Part("renditions (JPEG)", True, NOT_LOADED),
    "images/": Part("stored originals (admin adds)", True, NOT_LOADED),
    "local_model/": Part("local-feature model (local_model/)", False, ONNX_FILE),
}
PCA_PART = Part("VLAD PCA projection (in local_index.faiss)", False, FAISS)
VOTE_CENTROIDS_PART = Part("descriptor votes: coarse centroids (in votes.faiss)", False, FAISS)
OTHER_PART = Part("other files", False, NOT_LOADED)


def _part_of(rel: str) -> Part:
    if rel in PARTS:
        return PARTS[rel]
    folder = rel.split("/", 1)[0] + "/"
    return PARTS.get(folder, OTHER_PART)


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to the bundle with "/" separators, file) of every regular file but the manifest."""
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == directory and d == BUILD_SCRATCH))
        for name in sorted(names):
            file = Path(root) / name
            rel = file.relative_to(directory).as_posix()
            if rel not in NOT_COUNTED and file.is_file() and not file.is_symlink():
                yield rel, file


def _array_bytes(directory: Path, rel: str) -> int:
    """Bytes of the arrays in a .npy (or every array of a .npz) once fully loaded: shape × item size, read from
    the .npy header (a .npz's arrays are small fixed ones and are read whole)."""
    file = directory / rel
    try:
        if file.suffix == ".npz":
            with np.load(file) as arrays:
                return sum(int(arrays[key].nbytes) for key in arrays.files)
        with file.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{rel} is not a readable array ({type(exc).__name__}); rebuild the bundle",
                          path=directory) from None


def _ram_bytes(part: Part, directory: Path, rel: str, size: int) -> int:
    if part.ram_basis == NBYTES:
        return _array_bytes(directory, rel)
    if part.ram_basis in (FAISS, JSON_TEXT):
        return size
    if part.ram_basis == ONNX_FILE:  # model.json is read once for its settings; the ONNX weights stay loaded
        return size if rel.endswith(".onnx") else 0
    return 0


def _fixed_bytes_inside(rel: str, meta: dict) -> tuple[Part, int] | None:
    """The fixed-cost share of a FAISS file that also grows with the artworks, from bundle.json's description of
    it: the PCA matrix and bias in front of the VLAD index (float32 [dims, from_dim] + [dims]), the coarse
    centroids of the vote index (float32 [nlist, dim]). Serialization headers stay with the per-artwork share."""
    if rel == "local_index.faiss":
        projection = (meta.get("local_index") or {}).get("projection")
        if isinstance(projection, dict) and {"dims", "from_dim"} <= projection.keys():
            dims, from_dim = int(projection["dims"]), int(projection["from_dim"])
            return PCA_PART, FLOAT32 * (dims * from_dim + dims)
    if rel == "votes.faiss":
        votes = meta.get("votes") or {}
        if {"nlist", "dim"} <= votes.keys():
            return VOTE_CENTROIDS_PART, FLOAT32 * int(votes["nlist"]) * int(votes["dim"])
    return None


def compute_footprint(directory: str | Path, meta: dict, artworks: int) -> dict:
    """bundle.json's ``footprint`` of the bundle in ``directory``: ``components`` (name, kind "per_artwork" or
    "fixed", ram_basis, files, disk_bytes, ram_bytes, and per artwork for the per-artwork ones), ``total``,
    ``fixed`` and ``per_artwork`` (the per-artwork components' sum / ``artworks``)."""
    directory = Path(directory)
    rows: dict[str, dict] = {}

    def add(part: Part, rel: str, disk: int, ram: int) -> None:
        row = rows.setdefault(part.name, {"name": part.name, "kind": "per_artwork" if part.per_artwork else "fixed",
                                          "ram_basis": part.ram_basis, "files": [], "disk_bytes": 0, "ram_bytes": 0})
        row["files"].append(rel)
        row["disk_bytes"] += disk
        row["ram_bytes"] += ram

    for rel, file in _files(directory):
        part, size = _part_of(rel), file.stat().st_size
        ram = _ram_bytes(part, directory, rel, size)
        inside = _fixed_bytes_inside(rel, meta)
        if inside is not None and inside[1] <= size:
            fixed_part, fixed = inside
            add(fixed_part, rel, fixed, fixed)
            size, ram = size - fixed, ram - fixed
        add(part, rel, size, ram)

    order = [part.name for part in (*PARTS.values(), PCA_PART, VOTE_CENTROIDS_PART, OTHER_PART)]
    components = sorted(rows.values(), key=lambda row: (row["kind"] == "fixed", order.index(row["name"])))
    for row in components:
        per = row["kind"] == "per_artwork" and artworks > 0
        row["disk_per_artwork"] = row["disk_bytes"] / artworks if per else None
        row["ram_per_artwork"] = row["ram_bytes"] / artworks if per else None

    def summed(kind: str | None) -> dict:
        chosen = [r for r in components if kind is None or r["kind"] == kind]
        return {"disk_bytes": sum(r["disk_bytes"] for r in chosen), "ram_bytes": sum(r["ram_bytes"] for r in chosen)}

    varying = summed("per_artwork")
    return {"artworks": artworks, "not_counted": [MANIFEST], "components": components, "total": summed(None),
            "fixed": summed("fixed"),
            "per_artwork": {key: value / artworks if artworks else None for key, value in varying.items()}}
