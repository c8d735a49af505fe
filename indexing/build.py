"""Collection CSV → index bundle (one entry function, hloc style: ``build_bundle(…, config)``)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import faiss
import numpy as np

import artlens
from artlens.config import with_defaults
from artlens.embedder import Embedder
from artlens.errors import ArtlensError, CollectionError
from artlens.files import moved_into_place
from artlens.imaging import load_image
from artlens.indexing.store import vlad
from artlens.indexing.store.bundle import ReferenceFeatures, resolve_shortlist, uses_global_embedding
from artlens.local_features import FeatureExtractor, install_model
from artlens.verification import FEATURE_CONFIG, LocalFeatures, matching_space

from . import bundle_writer, descriptor_votes, renditions, segment_collection, vector_index, vocabulary
from .collection import fetch_bytes, read_collection, resolve_image
from .reference import read_reference

DEFAULT_CONFIG: dict = {
    "features": FEATURE_CONFIG,
    "index": vector_index.DEFAULT_CONFIG,
    "vlad": vocabulary.DEFAULT_CONFIG,
    "batch_size": 16,
    "segments": segment_collection.DEFAULT_CONFIG,  # used when build_bundle gets a SAM model (sam_dir)
    "votes": descriptor_votes.DEFAULT_CONFIG,  # the descriptor-vote shortlist's index; None: none is built
    # The shortlist the bundle is built for (auto | fused | global | local; "auto": fused for a pretrained model,
    # local for a random-init one). Global embeddings (one DINOv2 forward per artwork) are computed and stored only
    # where recognition reads them: a fused or global shortlist, or a pretrained model.
    "shortlist": "auto",
    "always_embed": False,  # True: store global embeddings even where the shortlist does not read them (benchmarks)
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
    """Extract every artwork's local features, embed it (where the bundle's shortlist reads global embeddings:
    ``config["shortlist"]``), index it, and write the bundle atomically.

    Bad rows (missing or undecodable image, duplicate id, …) are reported with their CSV line; with
    ``strict`` the first one fails the build and nothing is written. ``before_commit`` runs on the finished
    staging directory before it is moved into place (the CLI calibrates there). With ``sam_dir`` every artwork
    is also segmented and its segments indexed (indexing/segment_collection.py, docs/segments.md).
    """
    cfg = with_defaults(DEFAULT_CONFIG, config)
    feature_config = with_defaults(FEATURE_CONFIG, cfg["features"])
    # A learned method's model directory (``features.model_dir``): copied into the bundle, not recorded as a path.
    features_model = feature_config.pop("model_dir", None)
    extractor = FeatureExtractor(feature_config, features_model)
    started = time.perf_counter()
    out = Path(out)
    bundle_writer.check_replaceable(out)
    collection = read_collection(collection_csv)
    skipped = list(collection.problems)
    if strict and skipped:
        line, reason = skipped[0]
        raise CollectionError(f"{collection.path}:{line}: {reason} (--strict)")
    embedder = Embedder(model_dir)
    try:
        shortlist = resolve_shortlist(cfg["shortlist"], pretrained=embedder.info.pretrained)
    except ValueError as exc:
        raise ArtlensError(f"build setting 'shortlist': {exc}") from None
    global_embedding = cfg["always_embed"] or uses_global_embedding(shortlist, pretrained=embedder.info.pretrained)
    segmenter = None
    if sam_dir is not None:
        segmenter = segment_collection.SegmentCollector(
            sam_dir, embedder, with_defaults(segment_collection.DEFAULT_CONFIG, cfg["segments"]), feature_config,
            global_embedding=global_embedding)
    tick = progress or (lambda stage, done, total: None)

    # Renditions are written into the staging directory as rows are read: a large collection's JPEGs never
    # sit in memory together.
    staging = bundle_writer.staging_dir(out)
    with moved_into_place(staging, out):
        model_files = install_model(Path(features_model), staging) if extractor.model is not None else []
        artworks: list[dict] = []
        feats: list[LocalFeatures] = []
        pending: list[np.ndarray] = []  # images for the model, embedded in batches
        vectors: list[np.ndarray] = []
        total = len(collection.rows)
        for done, row in enumerate(collection.rows, start=1):
            source = resolve_image(collection.path, row.image)
            try:
                data = fetch_bytes(source)
                reference = read_reference(data, name=f"{collection.path}:{row.number} ({row.image})",
                                           extractor=extractor)
                rendition = renditions.write_rendition(staging, reference.rendition)
            except ArtlensError as exc:
                reason = str(exc) if str(row.image) in str(exc) else f"{row.image}: {exc}"
                if strict:
                    raise CollectionError(f"{collection.path}:{row.number}: {reason} (--strict)") from None
                skipped.append((row.number, reason))
                tick("images", done, total)
                continue
            decoded = reference.image
            feats.append(reference.features)
            width, height = decoded.original_size
            artworks.append({"object_id": row.object_id, "image": row.image, "rendition": rendition,
                             "width": width, "height": height, "metadata": row.metadata})
            if segmenter is not None:  # one artwork at a time: its forward also feeds the pooled segment vectors
                # The segments' detail features are cut from a larger decode of the same bytes.
                detail_rgb = load_image(data, max_side=segmenter.config["detail_side"]).rgb \
                    if segmenter.config["detail_keypoints"] > 0 else None
                whole = segmenter.add(len(artworks) - 1, row.object_id, decoded.rgb, (width, height), feats[-1],
                                      detail_rgb)
                if whole is not None:
                    vectors.append(whole[None])
                tick("images", done, total)
                continue
            if global_embedding:
                pending.append(decoded.rgb)
            if len(pending) >= cfg["batch_size"]:
                vectors.append(embedder.embed_arrays(pending, cfg["batch_size"]))
                pending = []
            tick("images", done, total)
        if pending:
            vectors.append(embedder.embed_arrays(pending, cfg["batch_size"]))
        if not artworks:
            raise CollectionError(f"{collection.path}: no usable rows ({len(skipped)} skipped); nothing to index")
        embeddings, index, index_desc = None, None, None
        if global_embedding:
            embeddings = np.concatenate(vectors).astype(np.float32)
            index, index_desc = vector_index.build_index(embeddings, cfg["index"])
        features = ReferenceFeatures.from_list(feats, feature_config["method"])
        if features.offsets[-1] == 0:  # nothing to learn a vocabulary from, nothing to verify against
            raise CollectionError(f"{collection.path}: no local features in any of the {len(artworks)} images"
                                  " (blank, uniform or tiny images?); artworks need visible detail to be recognised")
        visual_words, local_index, local_desc = _local_shortlist_index(
            features, with_defaults(vocabulary.DEFAULT_CONFIG, cfg["vlad"]), cfg["index"])
        votes, votes_desc = None, None
        if cfg["votes"] is not None:
            t_votes = time.perf_counter()
            votes, votes_desc = descriptor_votes.build_vote_index(features, cfg["votes"])
            votes_desc["build_s"] = round(time.perf_counter() - t_votes, 2)
        segment_store, segment_desc = None, None
        if segmenter is not None:
            segment_store, segment_desc = segmenter.finish(
                segment_collection.descriptors_in_matching_space(features, feature_config["method"]), visual_words)
        tick("index", 1, 1)

        meta = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "collection": {"csv": str(collection.path), "metadata_columns": collection.metadata_columns,
                           "rows": total, "skipped": [{"line": n, "reason": r} for n, r in sorted(skipped)]},
            "model": {**embedder.info.public(), "embedding_dim": embedder.dim, "model_dir": str(model_dir),
                      "global_embedding": global_embedding},
            "shortlist": shortlist,
            "counts": {"artworks": len(artworks), "keypoints": int(features.offsets[-1])},
            "index": index_desc,  # None: no global embeddings
            "local_index": local_desc,
            "features": extractor.record(model_files),
            **({"votes": votes_desc} if votes_desc else {}),
            "calibration": None,
            **({"segments": segment_desc} if segment_desc else {}),
            "renditions": renditions.describe(staging, artworks),
            "versions": {"artlens": artlens.__version__, "faiss": faiss.__version__, "opencv": cv2.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
        }
        if segment_store is not None:  # first: bundle.json's checksums cover these files
            segment_store.write(staging)
        bundle_writer.write_bundle_files(staging, meta, artworks, embeddings, index, features, visual_words,
                                         local_index, votes)
        if before_commit:
            before_commit(staging)
        bundle_writer.check_replaceable(out)  # again: what is at ``out`` now is what the swap replaces
    return BuildReport(out, len(artworks), sorted(skipped), time.perf_counter() - started)


def _local_shortlist_index(features: ReferenceFeatures, vlad_config: dict, index_config: dict
                           ) -> tuple[np.ndarray, faiss.Index, dict]:
    """Visual vocabulary + VLAD index: the shortlist that works without pretrained weights.

    The index holds PCA-whitened compact VLADs and carries the projection, so it is searched with raw VLADs. The
    PCA is learnt on each reference's VLAD of the whole image and of the same regions a query photo is split into.
    """
    if features.method in {"orb", "akaze"}:
        raise CollectionError("the VLAD shortlist needs float descriptors (rootsift or sift), not binary ones")
    space = matching_space(np.asarray(features.descriptors), features.method)
    visual_words = vocabulary.train_vocabulary(space, vlad_config)
    whole, regional = [], []
    for i in range(len(features)):
        ref, desc = features.get(i), space[features.offsets[i]:features.offsets[i + 1]]
        masks = vlad.region_masks(ref.keypoints, ref.image_size)
        ref_vlads = vlad.aggregate_regions(desc, visual_words, masks)
        whole.append(ref_vlads[0])
        regional.extend(ref_vlads[1:])
    vectors = np.stack(whole)
    samples = np.concatenate([vectors, np.stack(regional)]) if regional else vectors
    projection = vocabulary.fit_projection(samples, len(visual_words), vlad_config)
    inner, desc = vector_index.build_index(vlad.compact(vectors, projection), index_config)
    index = vlad.projection_index(projection, inner)
    desc.update(method="vlad", words=int(visual_words.shape[0]), vlad=vlad_config,
                projection=None if projection is None else {
                    "kind": "pca-whitening", "dims": projection.dims, "from_dim": int(vectors.shape[1]),
                    "samples": len(whole) + len(regional)})
    return visual_words, index, desc
