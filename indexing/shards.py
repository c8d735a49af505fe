"""The per-artwork half of an index build, in shards: decode, local features, rendition and (where the bundle reads
them) global embeddings of a run of collection rows, written to disk so that a killed build resumes where it was.

Both build paths run these same functions: in process (indexing/build.py) and as Ray Data stages
(indexing/ray_build.py). Layout inside the build's staging directory (docs/scale.md)::

    shards/plan.json          what every shard covers (row ranges) and the key the shards were made under
    shards/00003.npz          the shard's arrays: keypoints, descriptors, offsets, sizes[, embeddings]
    shards/00003.segments.pkl its artworks' SAM segments (builds with segments): records, keypoints inside each
                              mask, detail features (indexing/segment_collection.py SegmentPart)
    shards/00003.json         its manifest: artworks, skipped rows, the files' sha256 — written last, by rename

A shard is finished exactly when its manifest exists and the files it names have their checksums; the merge
(:func:`load_shards`) concatenates finished shards in shard order, which is the collection's row order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from artlens.errors import ArtlensError, CollectionError
from artlens.hashing import file_sha256
from artlens.indexing.store.bundle import ReferenceFeatures
from artlens.local_features import FeatureExtractor
from artlens.verification import LocalFeatures

from . import renditions
from .collection import fetch_bytes, resolve_image
from .reference import read_reference

SHARD_DIR = "shards"


class ShardStageStopped(ArtlensError):
    """The shard stage stopped for a reason outside the collection (workers lost beyond their retries, the cluster
    gone): the finished shards are kept and the same build resumes from them."""


@dataclass(frozen=True)
class ShardTask:
    """What one worker needs to read a shard: picklable, no open handles."""

    index: int
    rows: list  # collection rows (indexing.collection Row: number, object_id, image, metadata)
    collection_path: str
    staging: str
    feature_config: dict
    global_embedding: bool
    strict: bool = False
    features_model: str | None = None  # a learned method's model directory (the copy in the staging directory)
    segments: bool = False  # keep each image (decoded, and its bytes) for the segment stage


@dataclass
class ShardResult:
    index: int
    artworks: list[dict] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)
    features: list[LocalFeatures] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # decoded RGB for the model; dropped once embedded
    sources: list[bytes] = field(default_factory=list)  # image bytes for the segments' detail decode; dropped then
    segments: object | None = None  # the shard's segment_collection.SegmentPart (builds with segments)
    embeddings: np.ndarray | None = None
    rows: int = 0


def build_key(collection_csv: Path, settings: dict) -> str:
    """Shards are reused only by a build of the same collection file with the same settings (model, features,
    shard size, …): the key names the staging directory and is recorded in plan.json."""
    digest = hashlib.sha256(Path(collection_csv).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def plan_shards(rows: list, shard_size: int) -> list[list]:
    return [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]


def extractor_for(task: ShardTask, threads: int | None = None) -> FeatureExtractor:
    """The shard's feature extractor, made once per process and reused for every shard it reads there: a learned
    model is an ONNX session, too costly to open per row or per shard. ``threads``: a learned model's ONNX Runtime
    threads (a worker that holds one CPU runs one)."""
    return _extractor(json.dumps(task.feature_config, sort_keys=True), task.features_model, threads)


@functools.lru_cache(maxsize=2)
def _extractor(config_json: str, model_dir: str | None, threads: int | None) -> FeatureExtractor:
    return FeatureExtractor(json.loads(config_json), model_dir, threads=threads)


def read_row(task: ShardTask, row, extractor: FeatureExtractor
             ) -> tuple[dict, LocalFeatures, np.ndarray, bytes] | tuple[int, str]:
    """One collection row → (artwork, features, decoded RGB, source bytes), or (CSV line, reason) for a bad row.
    The rendition is written into the staging directory by content, so a shard redone writes the same file."""
    source = resolve_image(Path(task.collection_path), row.image)
    try:
        data = fetch_bytes(source)
        artwork, features, rgb = reference_artwork(row, data, Path(task.staging), extractor,
                                                   name=f"{task.collection_path}:{row.number} ({row.image})")
    except ArtlensError as exc:
        reason = str(exc) if str(row.image) in str(exc) else f"{row.image}: {exc}"
        if task.strict:
            raise CollectionError(f"{task.collection_path}:{row.number}: {reason} (--strict)") from None
        return row.number, reason
    return artwork, features, rgb, data


def reference_artwork(row, data: bytes, staging: Path, extractor: FeatureExtractor, *, name: str, **load_limits
                      ) -> tuple[dict, LocalFeatures, np.ndarray]:
    """One row's image bytes → (artwork, features, decoded RGB); its rendition is written into ``staging``.
    ``name`` labels the image in error messages; ``load_limits``: read_reference's."""
    reference = read_reference(data, name=name, extractor=extractor, **load_limits)
    rendition = renditions.write_rendition(staging, reference.rendition)
    width, height = reference.image.original_size
    artwork = {"object_id": row.object_id, "image": row.image, "rendition": rendition,
               "width": width, "height": height, "metadata": row.metadata}
    return artwork, reference.features, reference.image.rgb


def extract_shard(task: ShardTask, on_row=None, extractor: FeatureExtractor | None = None) -> ShardResult:
    """Decode + local features + rendition of every row of the shard (the CPU-bound stage); ``on_row()`` after
    each. ``extractor``: the caller's (in process); by default the one this process keeps for the task's settings."""
    extractor = extractor or extractor_for(task)
    result = ShardResult(task.index, rows=len(task.rows))
    for row in task.rows:
        read = read_row(task, row, extractor)
        if on_row is not None:
            on_row()
        if len(read) == 2:
            result.skipped.append(read)  # type: ignore[arg-type]
            continue
        artwork, features, rgb, data = read
        result.artworks.append(artwork)
        result.features.append(features)
        if task.global_embedding or task.segments:
            result.images.append(rgb)
        if task.segments:
            result.sources.append(data)
    return result


def embed_shard(result: ShardResult, embedder, batch_size: int) -> ShardResult:
    """Global embeddings of the shard's decoded images (one ONNX session: the caller's ``embedder``)."""
    if result.images:
        result.embeddings = embedder.embed_arrays(result.images, batch_size).astype(np.float32)
    result.images = []
    return result


def write_shard(directory: Path, result: ShardResult, method: str) -> dict:
    """Write the shard's arrays, then its manifest (atomically, last): from then on the shard counts as done."""
    directory.mkdir(parents=True, exist_ok=True)
    features = ReferenceFeatures.from_list(result.features, method)
    arrays = {"keypoints": features.keypoints, "descriptors": features.descriptors, "offsets": features.offsets,
              "sizes": features.sizes}
    if result.embeddings is not None:
        arrays["embeddings"] = result.embeddings
    npz = directory / f"{result.index:05d}.npz"
    tmp = npz.with_suffix(".npz.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, npz)
    manifest = {"index": result.index, "rows": result.rows, "artworks": result.artworks,
                "skipped": [list(s) for s in result.skipped], "npz": npz.name, "sha256": file_sha256(npz),
                "pid": os.getpid()}
    if result.segments is not None:
        part = directory / f"{result.index:05d}.segments.pkl"
        tmp = part.with_suffix(".pkl.tmp")
        tmp.write_bytes(pickle.dumps(result.segments, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, part)
        manifest.update(segments=part.name, segments_sha256=file_sha256(part))
    target = directory / f"{result.index:05d}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False))
    os.replace(tmp, target)
    return {"index": result.index, "rows": result.rows, "artworks": len(result.artworks),
            "skipped": manifest["skipped"]}


def write_plan(directory: Path, key: str, shards: list[list]) -> None:
    """Record the shards' row ranges under ``key``; a plan of another key means the shards there are stale."""
    directory.mkdir(parents=True, exist_ok=True)
    plan = {"key": key, "shards": [[s[0].number, s[-1].number, len(s)] for s in shards]}
    path = directory / "plan.json"
    if path.is_file() and json.loads(path.read_text()) != plan:
        for stale in directory.iterdir():
            stale.unlink()
    tmp = directory / "plan.json.tmp"
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, path)


def finished_shards(directory: Path) -> set[int]:
    """Shards whose manifest is written and whose arrays match it."""
    done = set()
    for manifest_path in sorted(directory.glob("[0-9]*.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
            npz = directory / manifest["npz"]
            segments = directory / manifest["segments"] if "segments" in manifest else None
            if (npz.is_file() and file_sha256(npz) == manifest["sha256"]
                    and (segments is None or (segments.is_file()
                                              and file_sha256(segments) == manifest["segments_sha256"]))):
                done.add(int(manifest["index"]))
        except (OSError, ValueError, KeyError):
            continue  # a torn or foreign file: the shard is redone
    return done


@dataclass
class MergedShards:
    artworks: list[dict]
    skipped: list[tuple[int, str]]
    features: ReferenceFeatures
    embeddings: np.ndarray | None


def load_shards(directory: Path, count: int, method: str, global_embedding: bool,
                into: Path | None = None, head: MergedShards | None = None,
                on_segments: Callable[[object, int], None] | None = None) -> MergedShards:
    """Every shard's artworks and arrays, concatenated in shard order (the collection's row order).

    With ``into`` (the staging bundle's ``features`` directory) the keypoints and descriptors are written there
    shard by shard and the merged features are memory maps of those files: the merge never holds the collection's
    descriptors in RAM, and the bundle writer keeps the files as they are. Without it they are concatenated in RAM.
    ``head``: artworks that come before the shards' (an existing bundle's, when it is extended).
    ``on_segments(part, first_row)``: each shard's segments, in order, with the merged row of its first artwork.
    """
    artworks: list[dict] = []
    skipped: list[tuple[int, str]] = []
    sizes: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    offsets = [np.zeros(1, np.int64)]
    parts: list[FeaturePart] = []
    if head is not None:
        artworks, skipped = list(head.artworks), list(head.skipped)
        sizes.append(np.asarray(head.features.sizes))
        if head.embeddings is not None:
            embeddings.append(np.asarray(head.embeddings))
        offsets = [np.asarray(head.features.offsets, np.int64)]
        parts.append(FeaturePart(int(head.features.offsets[-1]),
                                 lambda: (head.features.keypoints, head.features.descriptors)))
    flat = int(offsets[0][-1])  # descriptors before the next shard
    for index in range(count):
        manifest = json.loads((directory / f"{index:05d}.json").read_text())
        npz = directory / manifest["npz"]
        with np.load(npz) as arrays:
            shard_offsets = arrays["offsets"]
            sizes.append(arrays["sizes"])
            if global_embedding and manifest["artworks"]:
                embeddings.append(arrays["embeddings"])
        offsets.append(shard_offsets[1:] + flat)
        flat += int(shard_offsets[-1])
        parts.append(FeaturePart(int(shard_offsets[-1]), functools.partial(_shard_arrays, npz)))
        if on_segments is not None and "segments" in manifest:
            # Written by this build's own workers (checksummed in the manifest): not foreign input.
            on_segments(pickle.loads((directory / manifest["segments"]).read_bytes()), len(artworks))
        artworks.extend(manifest["artworks"])
        skipped.extend((int(line), reason) for line, reason in manifest["skipped"])
    features = concatenate_features(parts, np.concatenate(offsets).astype(np.int64),
                                    np.concatenate(sizes).astype(np.int32).reshape(-1, 2), method, into)
    return MergedShards(artworks, skipped, features,
                        np.concatenate(embeddings).astype(np.float32) if embeddings else None)


@dataclass(frozen=True)
class FeaturePart:
    """A run of artworks' features to concatenate: ``count`` descriptors, and how to read (keypoints, descriptors)
    (arrays or memory maps: they are copied a chunk at a time)."""

    count: int
    read: Callable[[], tuple[np.ndarray, np.ndarray]]


COPY_CHUNK = 1 << 20  # descriptors copied into the feature files at a time


def _shard_arrays(npz: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(npz) as arrays:
        return arrays["keypoints"], arrays["descriptors"]


def concatenate_features(parts: list[FeaturePart], offsets: np.ndarray, sizes: np.ndarray, method: str,
                         into: Path | None = None) -> ReferenceFeatures:
    """The parts' keypoints and descriptors, in order, under ``offsets`` and ``sizes``: in RAM, or (``into``)
    written part by part into ``into/keypoints.npy`` and ``into/descriptors.npy`` and returned as read-only memory
    maps of those files — the same bytes ``np.save`` writes for the in-RAM arrays."""
    total = sum(part.count for part in parts)
    if into is None or not total:  # without descriptors there is nothing to map (an empty file cannot be)
        read = [part.read() for part in parts] or [(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))]
        # A part without descriptors holds (0, 128) whatever the method: only filled ones set the width.
        descriptors = [d for _, d in read if len(d)] or [read[0][1]]
        return ReferenceFeatures(np.concatenate([k for k, _ in read]).astype(np.float32),
                                 np.concatenate(descriptors).astype(np.uint8), offsets, sizes, method)
    dim = 128
    for part in parts:  # the width of the first filled part (read again below; a shard is a few MB)
        if part.count:
            dim = int(part.read()[1].shape[1])
            break
    into.mkdir(parents=True, exist_ok=True)
    keypoints = np.lib.format.open_memmap(into / "keypoints.npy", mode="w+", dtype=np.float32, shape=(total, 2))
    descriptors = np.lib.format.open_memmap(into / "descriptors.npy", mode="w+", dtype=np.uint8, shape=(total, dim))
    at = 0
    for part in parts:
        if not part.count:
            continue
        part_keypoints, part_descriptors = part.read()
        for start in range(0, part.count, COPY_CHUNK):
            stop = min(part.count, start + COPY_CHUNK)
            keypoints[at + start:at + stop] = part_keypoints[start:stop]
            descriptors[at + start:at + stop] = part_descriptors[start:stop]
        at += part.count
    if at != total or (len(offsets) and int(offsets[-1]) != total):
        raise ValueError(f"feature parts hold {at} descriptors, their offsets {int(offsets[-1])}")
    keypoints.flush()
    descriptors.flush()
    del keypoints, descriptors
    return ReferenceFeatures(np.load(into / "keypoints.npy", mmap_mode="r"),
                             np.load(into / "descriptors.npy", mmap_mode="r"), offsets, sizes, method)


def pack(result: ShardResult) -> bytes:
    """A shard in flight between Ray Data stages (one binary column)."""
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> ShardResult:
    return pickle.loads(payload)
