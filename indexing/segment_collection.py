"""Segmenting a collection during the build: SAM masks per artwork, segment vectors, detail features, indexes.

Each reference is segmented once (``amg.generate``); every segment gets a DINOv2 vector (segment_vectors.py), a
weight-free VLAD-PCA descriptor of the keypoints inside its mask, and optional detail features cut from a larger
decode. The files it writes are read by artlens.indexing.store.segments; why and what it costs: docs/segments.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np

from artlens.config import with_defaults
from artlens.embedder import Embedder
from artlens.errors import ArtlensError, ModelError
from artlens.imaging import load_image, to_gray
from artlens.indexing.store import vlad
from artlens.indexing.store.segments import DetailFeatures, SegmentStore, project_local, segment_files
from artlens.verification import FEATURE_CONFIG, LocalFeatures, extract, matching_space
from artlens.verification.features import LEARNED_METHODS

from . import amg, compressed_index, segment_vectors, vector_index
from .sam_model import SamModel
from .vocabulary import fit_projection

DEFAULT_CONFIG: dict = {
    "mode": "pooled",  # pooled | crop (segment_vectors.MODES); pooled needs no extra forward pass
    "amg": amg.DEFAULT_CONFIG,
    "local_dims": 128,  # PCA dimensions of a segment's VLAD (full VLAD: 128 words × 128 = 16,384 floats)
    "local_pca_sample": 4096,  # segment VLADs the PCA is fitted on (Gram-matrix PCA: cost grows with its square)
    "min_keypoints": 8,  # a segment with fewer reference keypoints gets no local descriptor (a zero vector)
    "dilate": 3,  # mask pixels (at mask_side) a mask grows by before collecting keypoints: SIFT fires on edges
    "index": vector_index.DEFAULT_CONFIG,
    "detail_keypoints": 1000,  # RootSIFT keypoints per segment's detail crop (0: no detail features)
    "detail_side": 1600,  # the reference is decoded at most this large for the detail crops
    "detail_max_area": 0.5,  # segments whose grown bbox covers more of the artwork get no detail features
    "detail_margin": 0.25,  # a segment's bbox grows by this fraction of its size per side for its detail crop
    "detail_max_upscale": 4.0,  # a crop is enlarged at most this much (web-sized references need it most)
}


def segment_vector_index(vectors: np.ndarray, config: dict) -> tuple[faiss.Index, dict]:
    """The one place the segment vector index is built: exact below ``exact_below`` vectors, above it the
    compressed recipe of ``compressed_index`` (≈ 98 bytes per vector, nprobe tuned and recorded; measured in
    docs/index-benchmarks.md). The float vectors stay in ``vectors.npy`` (memory-mapped) for exact re-ranking."""
    return compressed_index.build_compressed_index(vectors, config)


@dataclass
class SegmentPart:
    """What :meth:`SegmentCollector.add` gathered for some artworks (a shard's), rows counted from the part's first
    artwork: written with the shard, absorbed by the merge's collector in row order."""

    records: list[dict] = field(default_factory=list)
    artwork: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    members: list[np.ndarray] = field(default_factory=list)
    details: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    detail_members: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"sam": 0.0, "embed": 0.0, "detail": 0.0})


class SegmentCollector:
    """Segments artworks one by one during the build, then builds the segment indexes once the vocabulary exists.

    Masks are not kept in memory across artworks: only their RLE and the reference keypoints they contain.
    ``global_embedding`` False (a bundle without global embeddings): no DINOv2 forward at all, segments get only
    their local descriptors (bundle.json segments "mode": "none").
    """

    def __init__(self, sam_dir: str | Path, embedder: Embedder, config: dict | None = None,
                 feature_config: dict | None = None, *, global_embedding: bool = True):
        self.config = with_defaults(DEFAULT_CONFIG, config)
        self.feature_config = with_defaults(FEATURE_CONFIG, feature_config)
        if self.feature_config["method"] in LEARNED_METHODS:  # detail features and segment VLADs are RootSIFT's
            raise ArtlensError(f"segments (--segments) are indexed with RootSIFT local features only, not"
                               f" {self.feature_config['method']!r}; build with --features rootsift, or without"
                               " --segments")
        self.amg_config = with_defaults(amg.DEFAULT_CONFIG, self.config["amg"])
        if self.config["mode"] not in segment_vectors.MODES:
            raise ModelError(f"unknown segment mode {self.config['mode']!r}; choose one of "
                             f"{', '.join(segment_vectors.MODES)}")
        self.sam = SamModel(sam_dir)
        self.sam_dir = str(sam_dir)  # where a Ray worker loads its own session from
        self.embedder = embedder
        self.global_embedding = global_embedding
        self._start_part()

    def _start_part(self) -> None:
        self.records: list[dict] = []
        self.artwork: list[int] = []
        self.vectors: list[np.ndarray] = []
        self.members: list[np.ndarray] = []  # per segment: indices into its artwork's keypoints
        self.details: list[tuple[np.ndarray, np.ndarray]] = []  # per segment: detail keypoints, descriptors
        self.detail_members: list[np.ndarray] = []  # per segment: its detail keypoints inside the mask
        self.seconds = {"sam": 0.0, "embed": 0.0, "detail": 0.0}

    def take(self) -> SegmentPart:
        """Everything added since the last take (a shard's segments), and start afresh."""
        part = SegmentPart(self.records, self.artwork, self.vectors, self.members, self.details,
                           self.detail_members, self.seconds)
        self._start_part()
        return part

    def absorb(self, part: SegmentPart, first_row: int) -> None:
        """Append a part whose artwork rows start at ``first_row`` of the merged collection."""
        self.records.extend({**record, "artwork": record["artwork"] + first_row} for record in part.records)
        self.artwork.extend(row + first_row for row in part.artwork)
        self.vectors.extend(part.vectors)
        self.members.extend(part.members)
        self.details.extend(part.details)
        self.detail_members.extend(part.detail_members)
        for key, value in part.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value

    def add(self, row: int, object_id: str, rgb: np.ndarray, original_size: tuple[int, int],
            feats: LocalFeatures, detail_rgb: np.ndarray | None = None) -> np.ndarray | None:
        """Segment one artwork and embed it; returns its whole-image vector [D] (from the same forward in pooled
        mode), None without global embeddings. ``detail_rgb``: the reference at up to ``detail_side`` for the
        detail features (default ``rgb``)."""

        t0 = time.perf_counter()
        segs = amg.generate(self.sam, rgb, self.amg_config)
        t1 = time.perf_counter()
        whole, vecs = None, [None] * len(segs)
        if self.global_embedding and self.config["mode"] == "pooled":
            whole, vecs = segment_vectors.segment_vectors_pooled(self.embedder, rgb, [s.mask for s in segs])
        elif self.global_embedding:
            whole = self.embedder.embed_arrays([rgb])[0]
            vecs = segment_vectors.crop_vectors(self.embedder, rgb, segs)
        self.seconds["sam"] += t1 - t0
        self.seconds["embed"] += time.perf_counter() - t1
        h, w = rgb.shape[:2]
        sx, sy = original_size[0] / w, original_size[1] / h
        for n, (seg, vec) in enumerate(zip(segs, vecs, strict=True)):
            x, y, bw, bh = seg.bbox
            self.records.append({
                "id": f"{object_id}#{n}", "artwork": row,
                "bbox": [round(x * sx, 1), round(y * sy, 1), round(bw * sx, 1), round(bh * sy, 1)],
                "area": round(seg.area, 5), "predicted_iou": round(seg.predicted_iou, 4),
                "stability": round(seg.stability, 4), "rle": amg.encode_rle(seg.mask),
            })
            self.artwork.append(row)
            if vec is not None:
                self.vectors.append(vec)
            self.members.append(keypoints_in_mask(seg.mask, feats, self.config["dilate"]))
        t2 = time.perf_counter()
        source = rgb if detail_rgb is None else detail_rgb
        for seg in segs:
            kps, desc = detail_features(source, seg.bbox, (w, h), feats.image_size, self.config, self.feature_config)
            self.details.append((kps, desc))
            inside = LocalFeatures(kps, desc, feats.image_size, feats.method)
            self.detail_members.append(keypoints_in_mask(seg.mask, inside, self.config["dilate"]))
        self.seconds["detail"] += time.perf_counter() - t2
        return whole

    def finish(self, descriptors_of: list[np.ndarray], vocabulary: np.ndarray) -> tuple[SegmentStore, dict]:
        """``descriptors_of[row]``: that artwork's descriptors in matching space. Returns the store and its
        description for bundle.json."""
        vectors, index, index_desc = None, None, None
        if self.global_embedding:
            dim = self.embedder.dim
            vectors = np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32)
            index, index_desc = segment_vector_index(vectors, self.config["index"])
        vlads = np.zeros((len(self.records), vocabulary.size), np.float32)
        usable = np.zeros(len(self.records), bool)
        method = self.feature_config["method"]
        for j, (row, members) in enumerate(zip(self.artwork, self.members, strict=True)):
            # A segment with detail features is described by them: they are what a close-up photo shows.
            close = self.detail_members[j]
            if len(close) >= self.config["min_keypoints"]:
                vlads[j] = vlad.aggregate(matching_space(self.details[j][1][close], method), vocabulary)
                usable[j] = True
            elif len(members) >= self.config["min_keypoints"]:
                vlads[j] = vlad.aggregate(descriptors_of[row][members], vocabulary)
                usable[j] = True
        mean, components = fit_pca(vlads[usable], self.config["local_dims"], self.config["local_pca_sample"])
        local = np.zeros((len(self.records), components.shape[0]), np.float32)
        if usable.any():
            local[usable] = project_local(vlads[usable], mean, np.ascontiguousarray(components.T))
        local_index, local_desc = vector_index.build_index(local, self.config["index"])
        detail = DetailFeatures.from_list(self.details) if self.config["detail_keypoints"] > 0 else None
        store = SegmentStore(self.records, np.asarray(self.artwork, np.int32), vectors, index, local, local_index,
                             mean, components, detail)
        n_art = len(set(self.artwork))
        desc = {
            "count": len(self.records), "artworks_with_segments": n_art,
            "mode": self.config["mode"] if self.global_embedding else "none", "sam": self.sam.info.public(),
            "amg": self.amg_config,
            "index": index_desc,
            "local": {"method": "vlad-pca", "dims": int(components.shape[0]),
                      "min_keypoints": self.config["min_keypoints"], "dilate": self.config["dilate"],
                      "with_descriptor": int(usable.sum()), "index": local_desc},
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }
        if detail is not None:
            desc["detail"] = {key: self.config[key] for key in ("detail_keypoints", "detail_side", "detail_max_area",
                                                             "detail_margin", "detail_max_upscale")}
            desc["detail"].update({"keypoints": int(detail.offsets[-1]),
                                   "segments_with_detail": int(np.count_nonzero(np.diff(detail.offsets)))})
        desc["files"] = segment_files(desc)
        return store, desc


def segment_shard(result, collector: SegmentCollector):
    """A shard's artworks (indexing/shards.py ShardResult, read with ``segments``) segmented by ``collector`` (its
    SAM and DINOv2 sessions: the caller's); the whole-image vectors of the same forwards become the shard's
    embeddings (where the bundle stores them), its segments a :class:`SegmentPart`, and its images are dropped."""
    wholes = []
    rows = zip(result.artworks, result.features, result.images, result.sources, strict=True)
    for row, (artwork, feats, rgb, data) in enumerate(rows):
        # The segments' detail features are cut from a larger decode of the same bytes.
        detail_rgb = load_image(data, max_side=collector.config["detail_side"]).rgb \
            if collector.config["detail_keypoints"] > 0 else None
        whole = collector.add(row, artwork["object_id"], rgb, (artwork["width"], artwork["height"]), feats,
                              detail_rgb)
        if whole is not None:
            wholes.append(whole[None])
    result.embeddings = np.concatenate(wholes).astype(np.float32) if wholes else None
    result.segments = collector.take()
    result.images, result.sources = [], []
    return result


def detail_features(rgb: np.ndarray, bbox: tuple[float, float, float, float], mask_frame: tuple[int, int],
                    analysed_size: tuple[int, int], config: dict, feature_config: dict
                    ) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT of one segment's grown bbox, cut from ``rgb`` (the reference at up to ``detail_side``) and enlarged
    to the extractor's ``max_side`` (at most ``detail_max_upscale``×). ``bbox`` is in ``mask_frame`` pixels (the
    image SAM saw); keypoints come back in the ``analysed_size`` frame (the artwork's own features')."""
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    if config["detail_keypoints"] <= 0:
        return empty
    x, y, bw, bh = bbox
    margin = config["detail_margin"]
    fw, fh = mask_frame
    x0, y0 = max(0.0, x - margin * bw), max(0.0, y - margin * bh)
    x1, y1 = min(float(fw), x + bw * (1 + margin)), min(float(fh), y + bh * (1 + margin))
    if (x1 - x0) * (y1 - y0) > config["detail_max_area"] * fw * fh or x1 - x0 < 2 or y1 - y0 < 2:
        return empty  # (nearly) the whole artwork: its own features already cover it at this scale
    h, w = rgb.shape[:2]
    sx, sy = w / fw, h / fh  # mask frame → detail image
    c0, r0 = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    c1, r1 = int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))
    crop = to_gray(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
    scale = min(feature_config["max_side"] / max(crop.shape), config["detail_max_upscale"])
    if scale > 1.0:  # enlarge here; extract() only ever shrinks
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                          interpolation=cv2.INTER_CUBIC)
    feats = extract(crop, {**feature_config, "max_keypoints": config["detail_keypoints"]})
    if len(feats) == 0:
        return empty
    # crop pixels (as analysed) → detail image → analysed reference frame
    back = np.array([(c1 - c0) / feats.image_size[0], (r1 - r0) / feats.image_size[1]], np.float32)
    to_ref = np.array([analysed_size[0] / w, analysed_size[1] / h], np.float32)
    pts = (feats.keypoints * back + np.array([c0, r0], np.float32)) * to_ref
    return pts.astype(np.float32), feats.descriptors


def keypoints_in_mask(mask: np.ndarray, feats: LocalFeatures, dilate: int) -> np.ndarray:
    """Indices of ``feats``' keypoints that fall inside ``mask`` (grown by ``dilate`` mask pixels)."""
    if len(feats) == 0:
        return np.zeros(0, np.int64)
    if dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    mh, mw = mask.shape
    w, h = feats.image_size
    cols = np.clip((feats.keypoints[:, 0] * mw / w).astype(np.int64), 0, mw - 1)
    rows = np.clip((feats.keypoints[:, 1] * mh / h).astype(np.int64), 0, mh - 1)
    return np.flatnonzero(mask[rows, cols])


def fit_pca(vlads: np.ndarray, dims: int, sample: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plain PCA of segment VLADs (``vocabulary.fit_projection`` without whitening, on at most ``sample``
    of them): (mean [d_in], components [d_out, d_in])."""
    d_in = vlads.shape[1]
    if len(vlads) > sample:
        vlads = vlads[np.sort(np.random.default_rng(seed).choice(len(vlads), sample, replace=False))]
    projection = fit_projection(vlads, d_in // 128, {"pca_dims": dims, "whiten_power": 0.0})
    if projection is None:  # nothing to learn from: one all-zero component keeps the index well-formed
        return np.zeros(d_in, np.float32), np.zeros((1, d_in), np.float32)
    return vlads.mean(axis=0).astype(np.float32), projection.matrix


def descriptors_in_matching_space(features, method: str) -> list[np.ndarray]:
    """Per artwork, its reference descriptors as matching-space floats (for the segment VLADs)."""
    space = matching_space(np.asarray(features.descriptors), method)
    return [space[features.offsets[i]:features.offsets[i + 1]] for i in range(len(features))]
