"""Collection CSV → index bundle (one entry function, hloc style: ``build_bundle(…, config)``)."""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import faiss
import numpy as np

import artlens
from artlens.embedder import Embedder
from artlens.errors import ArtlensError, CollectionError
from artlens.imaging import load_image, to_gray
from artlens.verification import (
    FEATURE_CONFIG,
    VLAD_CONFIG,
    LocalFeatures,
    extract,
    fit_vlad_projection,
    matching_space,
    train_vocabulary,
    vlad_aggregate,
    vlad_compact,
    vlad_projection_index,
    vlad_region_masks,
)

from . import bundle as bundle_io
from . import descriptor_votes, renditions, vector_index
from . import segments as segments_io
from .collection import check_reference_features, fetch_bytes, read_collection, resolve_image

DEFAULT_CONFIG: dict = {
    "features": FEATURE_CONFIG,
    "index": vector_index.DEFAULT_CONFIG,
    "vlad": VLAD_CONFIG,
    "batch_size": 16,
    "segments": segments_io.DEFAULT_CONFIG,  # used when build_bundle gets a SAM model (sam_dir)
    "votes": descriptor_votes.DEFAULT_CONFIG,  # the descriptor-vote shortlist's index; None: none is built
}

# progress(stage, done, total): the CLI draws rich bars from it; library callers may pass None.
Progress = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    path: Path
    indexed: int
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)
    seconds: float = 0.0


def build_bundle(
    model_dir: str | Path,
    collection_csv: str | Path,
    out: str | Path,
    *,
    config: dict | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    before_commit: Callable[[Path], None] | None = None,
    sam_dir: str | Path | None = None,
) -> BuildReport:
    """Embed every artwork, extract its local features, index it, and write the bundle atomically.

    Bad rows (missing or undecodable image, duplicate id, …) are reported with their CSV line; with
    ``strict`` the first one fails the build and nothing is written. ``before_commit`` runs on the finished
    staging directory before it is moved into place (the CLI calibrates there). With ``sam_dir`` every artwork
    is also segmented and its segments indexed (indexing/segments.py, docs/segments.md).
    """
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    fcfg = {**FEATURE_CONFIG, **cfg["features"]}
    started = time.perf_counter()
    out = Path(out)
    bundle_io.check_replaceable(out)
    collection = read_collection(collection_csv)
    skipped = list(collection.problems)
    if strict and skipped:
        line, reason = skipped[0]
        raise CollectionError(f"{collection.path}:{line}: {reason} (--strict)")
    embedder = Embedder(model_dir)
    segmenter = None
    if sam_dir is not None:
        segmenter = segments_io.SegmentCollector(sam_dir, embedder,
                                                 {**segments_io.DEFAULT_CONFIG, **cfg["segments"]}, fcfg)
    tick = progress or (lambda stage, done, total: None)

    # Renditions are written into the staging directory as rows are read: a large collection's JPEGs never
    # sit in memory together.
    staging = bundle_io.staging_dir(out)
    try:
        artworks: list[dict] = []
        feats: list[LocalFeatures] = []
        pending: list[np.ndarray] = []  # images for the model, embedded in batches
        vectors: list[np.ndarray] = []
        total = len(collection.rows)
        for done, row in enumerate(collection.rows, start=1):
            source = resolve_image(collection.path, row.image)
            try:
                data = fetch_bytes(source)
                label = f"{collection.path}:{row.number} ({row.image})"
                decoded = load_image(data, name=label, max_side=fcfg["max_side"])
                row_feats = extract(to_gray(decoded.rgb), fcfg)
                check_reference_features(len(row_feats), label)
                rendition = renditions.write_rendition(staging, renditions.make_rendition(data, name=label))
            except ArtlensError as exc:
                reason = str(exc) if str(row.image) in str(exc) else f"{row.image}: {exc}"
                if strict:
                    raise CollectionError(f"{collection.path}:{row.number}: {reason} (--strict)") from None
                skipped.append((row.number, reason))
                tick("images", done, total)
                continue
            feats.append(row_feats)
            width, height = decoded.original_size
            artworks.append({"object_id": row.object_id, "image": row.image, "rendition": rendition,
                             "width": width, "height": height, "metadata": row.metadata})
            if segmenter is not None:  # one artwork at a time: its forward also feeds the pooled segment vectors
                # The segments' detail features are cut from a larger decode of the same bytes.
                detail_rgb = load_image(data, max_side=segmenter.cfg["detail_side"]).rgb \
                    if segmenter.cfg["detail_keypoints"] > 0 else None
                vectors.append(segmenter.add(len(artworks) - 1, row.object_id, decoded.rgb, (width, height),
                                             feats[-1], detail_rgb)[None])
                tick("images", done, total)
                continue
            pending.append(decoded.rgb)
            if len(pending) >= cfg["batch_size"]:
                vectors.append(embedder.embed_arrays(pending, cfg["batch_size"]))
                pending = []
            tick("images", done, total)
        if pending:
            vectors.append(embedder.embed_arrays(pending, cfg["batch_size"]))
        if not artworks:
            raise CollectionError(f"{collection.path}: no usable rows ({len(skipped)} skipped); nothing to index")
        embeddings = np.concatenate(vectors).astype(np.float32)
        index, index_desc = vector_index.build_index(embeddings, cfg["index"])
        features = bundle_io.ReferenceFeatures.from_list(feats, fcfg["method"])
        if features.offsets[-1] == 0:  # nothing to learn a vocabulary from, nothing to verify against
            raise CollectionError(f"{collection.path}: no local features in any of the {len(artworks)} images"
                                  " (blank, uniform or tiny images?); artworks need visible detail to be recognised")
        vocabulary, local_index, local_desc = _local_shortlist_index(features, {**VLAD_CONFIG, **cfg["vlad"]},
                                                                     cfg["index"])
        votes, votes_desc = None, None
        if cfg["votes"] is not None:
            t_votes = time.perf_counter()
            votes, votes_desc = descriptor_votes.build_vote_index(features, cfg["votes"])
            votes_desc["build_s"] = round(time.perf_counter() - t_votes, 2)
        segment_store, segment_desc = None, None
        if segmenter is not None:
            segment_store, segment_desc = segmenter.finish(
                segments_io.descriptors_in_matching_space(features, fcfg["method"]), vocabulary)
        tick("index", 1, 1)

        meta = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "collection": {"csv": str(collection.path), "metadata_columns": collection.metadata_columns,
                           "rows": total, "skipped": [{"line": n, "reason": r} for n, r in sorted(skipped)]},
            "model": {**embedder.info.public(), "embedding_dim": embedder.dim, "model_dir": str(model_dir)},
            "counts": {"artworks": len(artworks), "keypoints": int(features.offsets[-1])},
            "index": index_desc,
            "local_index": local_desc,
            "features": {"config": fcfg},
            **({"votes": votes_desc} if votes_desc else {}),
            "calibration": None,
            **({"segments": segment_desc} if segment_desc else {}),
            "renditions": renditions.describe(staging, artworks),
            "versions": {"artlens": artlens.__version__, "faiss": faiss.__version__, "opencv": cv2.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
        }
        if segment_store is not None:  # first: bundle.json's checksums cover these files
            segment_store.write(staging)
        bundle_io.write_bundle_files(staging, meta, artworks, embeddings, index, features, vocabulary,
                                     local_index, votes)
        if before_commit:
            before_commit(staging)
        bundle_io.commit(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written bundle behind
        raise
    return BuildReport(out, len(artworks), sorted(skipped), time.perf_counter() - started)


def _local_shortlist_index(features: bundle_io.ReferenceFeatures, vlad_cfg: dict, index_cfg: dict
                           ) -> tuple[np.ndarray, faiss.Index, dict]:
    """Visual vocabulary + VLAD index: the shortlist that works without pretrained weights.

    The index holds PCA-whitened compact VLADs and carries the projection, so it is searched with raw VLADs. The
    PCA is learnt on each reference's VLAD of the whole image and of the same regions a query photo is split into.
    """
    if features.method in {"orb", "akaze"}:
        raise CollectionError("the VLAD shortlist needs float descriptors (rootsift or sift), not binary ones")
    space = matching_space(np.asarray(features.descriptors), features.method)
    vocabulary = train_vocabulary(space, vlad_cfg)
    whole, regional = [], []
    for i in range(len(features)):
        ref, desc = features.get(i), space[features.offsets[i]:features.offsets[i + 1]]
        masks = vlad_region_masks(ref.keypoints, ref.image_size)
        whole.append(vlad_aggregate(desc, vocabulary))
        regional.extend(vlad_aggregate(desc[m], vocabulary) for m in masks[1:])
    vectors = np.stack(whole)
    samples = np.concatenate([vectors, np.stack(regional)]) if regional else vectors
    projection = fit_vlad_projection(samples, len(vocabulary), vlad_cfg)
    inner, desc = vector_index.build_index(vlad_compact(vectors, projection), index_cfg)
    index = vlad_projection_index(projection, inner)
    desc.update(method="vlad", words=int(vocabulary.shape[0]), vlad=vlad_cfg,
                projection=None if projection is None else {
                    "kind": "pca-whitening", "dims": projection.dims, "from_dim": int(vectors.shape[1]),
                    "samples": len(whole) + len(regional)})
    return vocabulary, index, desc
