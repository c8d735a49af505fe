"""Change a bundle one artwork at a time (the service's admin routes), each change written as a new bundle version.

An added artwork is read like a collection row (reference.py) and appended to both FAISS indexes over the bundle's
existing vocabulary and projection (no segments); a removed one's rows go and the indexes are rebuilt from the
stored vectors. A bundle built without global embeddings stays without them (no model forward on an add).
Calibration is kept. Each version is staged, loaded as a check, swapped in, ``version`` bumped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from artlens.embedder import Embedder
from artlens.errors import ArtlensError, BundleError
from artlens.files import moved_into_place
from artlens.indexing.store import vlad
from artlens.indexing.store.bundle import Bundle, ReferenceFeatures, load_bundle
from artlens.indexing.store.segments import DetailFeatures, SegmentStore, segment_files
from artlens.local_features import FeatureExtractor, bundle_model_files
from artlens.verification import matching_space

from . import bundle_writer, renditions, vector_index
from .collection import check_object_id, fetch_bytes, resolve_image
from .descriptor_votes import build_vote_index, refill, with_added
from .reference import read_reference
from .segment_collection import segment_vector_index

IMAGE_DIR = "images"


class ArtworkExists(ArtlensError):
    code = "artwork_exists"


class LastArtwork(ArtlensError):
    code = "last_artwork"


def bundle_version(bundle: Bundle) -> int:
    return int(bundle.meta.get("version", 1))


def image_source(bundle: Bundle, row: int) -> str | Path:
    """Where artwork ``row``'s reference image lives: inside the bundle (added artworks) or as the CSV said."""
    art = bundle.artworks[row]
    if art.get("stored_image"):
        return bundle.path / art["stored_image"]
    return resolve_image(Path(bundle.meta.get("collection", {}).get("csv", bundle.path / "collection.csv")),
                         art["image"])


def add_artwork(bundle: Bundle, embedder: Embedder, object_id: str, image: bytes, metadata: dict[str, str], *,
                extension: str = "jpg", **load_limits) -> Bundle:
    """Index one new artwork and write the next bundle version over ``bundle.path``; returns it, loaded."""
    check_object_id(object_id)
    if any(art["object_id"] == object_id for art in bundle.artworks):
        raise ArtworkExists(f"artwork {object_id!r} is already in this index; delete it first to replace it")
    extractor = FeatureExtractor.for_bundle(bundle.meta, bundle.path)
    reference = read_reference(image, name=f"image of {object_id!r}", extractor=extractor, **load_limits)
    feats = reference.features
    sha = hashlib.sha256(image).hexdigest()
    stored = f"{IMAGE_DIR}/{sha[:32]}.{extension}"
    jpeg = reference.rendition
    rendition = renditions.rendition_name(jpeg)
    width, height = reference.image.original_size
    artwork = {"object_id": object_id, "image": stored, "stored_image": stored, "rendition": rendition,
               "width": width, "height": height, "metadata": dict(metadata)}
    vectors = None
    if bundle.embeddings is not None:
        vectors = embedder.embed_arrays([reference.image.rgb]).astype(np.float32)
    return append_artworks(bundle, [artwork], ReferenceFeatures.from_list([feats], feats.method), vectors,
                           change=f"add {object_id}", new_files={stored: image, rendition: jpeg})


def append_artworks(bundle: Bundle, artworks: list[dict], features: ReferenceFeatures,
                    embeddings: np.ndarray | None, *, change: str, new_files: dict[str, bytes | Path]) -> Bundle:
    """Append read artworks (their features, in order, and global embeddings where the bundle stores them) to the
    bundle's indexes over its trained vocabulary, projection and vote lists, and write ONE next version over
    ``bundle.path``; ``new_files``: the artworks' stored files (bytes, or a file to link). Returns it, loaded."""
    existing = bundle.rows
    for art in artworks:
        check_object_id(art["object_id"])
        if art["object_id"] in existing:
            raise ArtworkExists(f"artwork {art['object_id']!r} is already in this index; delete it first to replace"
                                " it")
    space = matching_space(np.asarray(features.descriptors), features.method)
    vlad_vectors = np.stack([vlad.aggregate(space[features.offsets[i]:features.offsets[i + 1]], bundle.vocabulary)
                             for i in range(len(features))]).astype(np.float32)
    index = None
    if bundle.embeddings is not None:
        if embeddings is None or len(embeddings) != len(artworks):
            raise BundleError("the bundle stores global embeddings but the added artworks have none")
        embeddings = np.concatenate([np.asarray(bundle.embeddings), embeddings.astype(np.float32)])
        index = faiss.clone_index(bundle.index)
        index.add(embeddings[len(bundle.artworks):])
    else:
        embeddings = None
    # The VLAD index may carry a PCA projection in front (IndexPreTransform, which FAISS cannot clone): add the
    # compact vectors to a copy of the inner index and put the same projection in front again.
    projection, inner = vlad.split_index(bundle.local_index, len(bundle.vocabulary))
    local_inner = faiss.clone_index(inner)
    local_inner.add(vlad.compact(vlad_vectors, projection))
    local_index = vlad.projection_index(projection, local_inner)
    old = bundle.features
    merged = ReferenceFeatures(
        keypoints=np.concatenate([np.asarray(old.keypoints), features.keypoints.astype(np.float32)]),
        descriptors=np.concatenate([np.asarray(old.descriptors), features.descriptors.astype(np.uint8)]),
        offsets=np.concatenate([old.offsets, old.offsets[-1] + features.offsets[1:]]).astype(np.int64),
        sizes=np.concatenate([old.sizes, features.sizes.astype(np.int32).reshape(-1, 2)]),
        method=old.method,
    )
    votes = None
    if bundle.votes is not None:  # ids are descriptor positions: the new artworks' come last
        grown = with_added(bundle.votes, features)
        votes = (grown, {**bundle.meta["votes"], "count": int(grown.ntotal)})
    return _write_version(bundle, change, [*bundle.artworks, *artworks], embeddings, index, merged, local_index,
                          new_files=new_files, votes=votes)


def add_renditions(bundle: Bundle) -> tuple[Bundle, list[tuple[str, str]]]:
    """Give every artwork without a stored rendition one, read from its recorded source, as the next bundle
    version (bundles built before renditions). Returns it and the (object_id, reason) of artworks whose source
    could not be read: they keep none, and the service falls back to their recorded source. Artworks without an
    image (indexed from features alone) have nothing to render and are left as they are."""
    staged: dict[str, bytes] = {}
    artworks, failed = [], []
    for row, art in enumerate(bundle.artworks):
        if art.get("rendition") or not (art.get("image") or art.get("stored_image")):
            artworks.append(art)
            continue
        try:
            jpeg = renditions.make_rendition(fetch_bytes(image_source(bundle, row)),
                                             name=f"image of {art['object_id']!r}")
        except ArtlensError as exc:
            failed.append((art["object_id"], str(exc)))
            artworks.append(art)
            continue
        rel = renditions.rendition_name(jpeg)
        staged[rel] = jpeg
        artworks.append({**art, "rendition": rel})
    if not staged:
        return bundle, failed
    votes = None if bundle.votes is None else (bundle.votes, bundle.meta["votes"])
    return _write_version(bundle, "renditions", artworks, bundle.embeddings, bundle.index,
                          bundle.features, bundle.local_index, new_files=staged, votes=votes), failed


def add_vote_index(bundle: Bundle, config: dict | None = None) -> Bundle:
    """Give a bundle built before descriptor votes its vote index (or rebuild it with ``config``), as the next
    bundle version; the rest is carried over unchanged. Recalibrate afterwards: the shortlist changes."""
    index, desc = build_vote_index(bundle.features, config)
    return _write_version(bundle, "vote index", bundle.artworks, bundle.embeddings, bundle.index,
                          bundle.features, bundle.local_index, votes=(index, desc))


def remove_artwork(bundle: Bundle, object_id: str) -> Bundle:
    """Drop one artwork and write the next bundle version over ``bundle.path``; returns it, loaded."""
    row = bundle.row(object_id)
    if len(bundle.artworks) == 1:
        raise LastArtwork(f"artwork {object_id!r} is the only one in this index; an index cannot be empty")
    keep = np.array([i for i in range(len(bundle.artworks)) if i != row], dtype=np.int64)
    artworks = [bundle.artworks[i] for i in keep]
    embeddings, index = None, None
    if bundle.embeddings is not None:
        embeddings = np.asarray(bundle.embeddings)[keep]
        index, _ = vector_index.build_index(embeddings, bundle.meta["index"])
    # The VLAD index may carry a PCA projection (FAISS IndexPreTransform): rebuild its inner index of compact
    # vectors and wrap it with the same projection again.
    projection, inner = vlad.split_index(bundle.local_index, len(bundle.vocabulary))
    compact = inner.reconstruct_n(0, inner.ntotal)[keep]
    local_inner, _ = vector_index.build_index(compact, bundle.meta["local_index"])
    local_index = vlad.projection_index(projection, local_inner)
    old = bundle.features
    parts = [old.get(int(i)) for i in keep]
    features = ReferenceFeatures.from_list(parts, old.method)
    segments = None
    if bundle.segments is not None:
        segments = remove_artwork_segments(bundle.segments, bundle.meta["segments"], row)
    votes = None
    if bundle.votes is not None:  # ids are descriptor positions: the later artworks' shift down
        fresh = refill(bundle.votes, features)
        votes = (fresh, {**bundle.meta["votes"], "count": int(fresh.ntotal)})
    return _write_version(bundle, f"delete {object_id}", artworks, embeddings, index, features, local_index,
                          segments=segments, votes=votes)


def remove_artwork_segments(store: SegmentStore, desc: dict, row: int) -> tuple[SegmentStore, dict]:
    """``store`` without artwork ``row``'s segments, later rows shifted down by one, both indexes rebuilt from
    the kept vectors with the settings ``desc`` (bundle.json's ``segments``) records; returns it and its new
    description."""
    keep = np.flatnonzero(store.artwork != row)
    artwork = store.artwork[keep].astype(np.int32)
    artwork[artwork > row] -= 1
    records = []
    for j, new_row in zip(keep, artwork, strict=True):
        records.append({**store.records[int(j)], "artwork": int(new_row)})
    vectors, index, index_desc = None, None, None
    if store.vectors is not None:  # DINOv2 segment vectors (bundles with global embeddings)
        vectors = np.ascontiguousarray(np.asarray(store.vectors)[keep], np.float32)
        index, index_desc = segment_vector_index(vectors, _compressed_settings(desc["index"]))
    local = np.ascontiguousarray(np.asarray(store.local)[keep], np.float32)
    local_index, local_desc = vector_index.build_index(local, _exact_settings(desc["local"]["index"]))
    detail = None
    if store.detail is not None:  # per-segment detail features: keep the kept segments' rows, in order
        detail = DetailFeatures.from_list([store.detail.of(int(j)) for j in keep])
    new = SegmentStore(records, artwork, vectors, index, local, local_index, store.pca_mean, store.pca_components,
                       detail)
    new_desc = {**desc, "count": len(records), "artworks_with_segments": len(set(artwork.tolist())),
                "index": index_desc,
                "local": {**desc["local"], "index": local_desc,
                          "with_descriptor": int((np.linalg.norm(local, axis=1) > 0).sum()) if len(local) else 0}}
    if detail is not None and "detail" in desc:
        new_desc["detail"] = {**desc["detail"], "keypoints": int(detail.offsets[-1]),
                              "segments_with_detail": int(np.count_nonzero(np.diff(detail.offsets)))}
    new_desc["files"] = segment_files(new_desc)
    return new, new_desc


def _compressed_settings(recorded: dict) -> dict:
    """The build settings of a segment vector index, read back from its recorded description: the same recipe,
    list count and recall target, so a delete does not quietly change how the index searches."""
    settings = {"exact_below": recorded.get("exact_below", vector_index.DEFAULT_CONFIG["exact_below"])}
    if not recorded.get("exact", True):
        settings["recipe"] = recorded["recipe"]
        for key, name in (("nlist", "nlist"), ("target_recall_10at10", "target_recall")):
            if recorded.get(key) is not None:
                settings[name] = recorded[key]
    return settings


def _exact_settings(recorded: dict) -> dict:
    """The build settings of ``vector_index.build_index`` read back from its recorded description."""
    settings = {"exact_below": recorded.get("exact_below", vector_index.DEFAULT_CONFIG["exact_below"])}
    for key, name in (("m", "hnsw_m"), ("ef_construction", "hnsw_ef_construction"), ("ef_search", "hnsw_ef_search")):
        if key in recorded:
            settings[name] = recorded[key]
    return settings


def _write_version(bundle: Bundle, change: str, artworks: list[dict], embeddings: np.ndarray | None,
                   index: faiss.Index | None, features: ReferenceFeatures, local_index: faiss.Index,
                   new_files: dict[str, bytes | Path] | None = None,
                   segments: tuple[SegmentStore, dict] | None = None,
                   votes: tuple[faiss.Index, dict] | None = None) -> Bundle:
    """``segments``: a changed segment store and its description (delete); None carries the old files over."""
    out = bundle.path
    version = bundle_version(bundle) + 1
    meta = {**bundle.meta, "version": version, "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "last_change": change,
            "counts": {"artworks": len(artworks), "keypoints": int(features.offsets[-1])},
            "index": None if index is None else {**bundle.meta["index"], "count": int(index.ntotal)},
            "local_index": {**bundle.meta["local_index"], "count": int(local_index.ntotal)}}
    if segments is not None:
        meta["segments"] = segments[1]
    if votes is not None:
        meta["votes"] = votes[1]
    staging = bundle_writer.staging_dir(out)
    with moved_into_place(staging, out):
        # Only the kept artworks' files move on: a deleted artwork's rendition and original go with the old version.
        _carry_images(out, staging, set(renditions.stored_files(artworks)) - set(new_files or {}), required=True)
        _carry_images(out, staging, set(bundle_model_files(bundle.meta)), required=True)  # learned features' model
        if segments is not None:  # first: bundle.json's checksums cover these files
            segments[0].write(staging)
        elif bundle.segments is not None:  # an added artwork has no segments; the others' keep their row numbers
            _carry_images(out, staging, set(segment_files(bundle.meta["segments"])))
        for rel, data in (new_files or {}).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, Path):
                _link_or_copy(data, staging / rel)
            else:
                (staging / rel).write_bytes(data)
        meta["renditions"] = renditions.describe(staging, artworks)
        bundle_writer.write_bundle_files(staging, meta, artworks, embeddings, index, features, bundle.vocabulary,
                                         local_index, votes[0] if votes else None)
        # Load the new version fully (counts, segment rows, checksums) before it replaces the served one: a
        # change that fails here leaves the bundle on disk as it was.
        load_bundle(staging)
        bundle_writer.check_replaceable(out)
    return load_bundle(out)


def _carry_images(old: Path, staging: Path, keep: set[str], required: bool = False) -> None:
    """Stored images still referenced move on to the new version (hard links: no copy where possible).
    ``required``: a missing one is an error (bundle.json will checksum it) rather than skipped."""
    for rel in keep:
        src, dst = old / rel, staging / rel
        if not src.is_file():
            if required:
                raise BundleError(f"the bundle's {rel} is missing; restore the bundle from a backup or rebuild it")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src, dst)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():  # two artworks of the same image share one stored file
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
