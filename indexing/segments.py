"""Segments in the bundle: SAM automatic masks per artwork, their vectors and the two segment indexes.

Each artwork's reference is segmented once (``amg.generate``); every segment gets

* a **DINOv2 vector** (``segment_embed``: ``pooled`` from the artwork's one forward pass, or ``crop``: one
  forward per cut-out), indexed for pretrained models;
* a **weight-free local descriptor**: VLAD of the reference's RootSIFT keypoints inside the (slightly dilated)
  mask with the bundle's visual vocabulary, PCA-reduced to ``local_dims`` floats. A random-init DINOv2 ranks
  segments at chance, so this is what lets a photographed detail find its artwork offline: a detail photo's
  VLAD resembles the VLAD of the segment it shows far more than the VLAD of the whole artwork.

Layout inside the bundle (all checksummed in ``bundle.json``, described under its ``segments`` key)::

    segments/segments.json      [{id, artwork, bbox, area, predicted_iou, stability, rle}], row j = segment j
    segments/artwork.npy        int32 [S] bundle row (artwork) of each segment
    segments/vectors.npy        float32 [S, D] DINOv2 segment vectors, L2-normalised
    segments/index.faiss        FAISS over vectors (see ``segment_vector_index``)
    segments/local.npy          float32 [S, d] PCA-reduced segment VLADs, L2-normalised (zeros: too few keypoints)
    segments/local_index.faiss  FAISS over local
    segments/local_pca.npz      mean [words·128], components [d, words·128]: the VLAD → local projection
    segments/detail_*.npy       optional: each segment's *detail features* (see below), keypoints [M, 2] in the
                                bundle's analysed reference frame, descriptors uint8 [M, 128], offsets [S + 1]

**Detail features.** The bundle's reference features are extracted once on the whole artwork at 800 px: a
detail photo (10–40 % of the canvas, filling a 1024 px phone frame) shares only the ~100–400 of them that fall in
that region, at the wrong scale. For every segment up to ``detail_max_area`` of the artwork, the build extracts
a second set of RootSIFT keypoints from the segment's grown bounding box, cut from the reference decoded at
``detail_side`` and enlarged to the feature extractor's size: the finer-scale keypoints a visitor's close-up
shows. Recognition verifies a photo against them (``recognition/segments.py``); the segment's local descriptor is
the VLAD of those of them inside the mask. Keypoints are stored in the same frame as the artwork's own features,
so a homography against a segment is a homography against the artwork.

``bbox`` is [x, y, w, h] in pixels of the original reference image; ``rle`` is COCO RLE of the mask at its
working resolution (``amg`` ``mask_side``), spanning the whole image. Polygons are derived on demand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np

from artlens.embedder import Embedder
from artlens.errors import ModelError
from artlens.imaging import to_gray
from artlens.verification import (
    FEATURE_CONFIG,
    LocalFeatures,
    extract,
    fit_vlad_projection,
    matching_space,
    vlad_aggregate,
)

from . import amg, compressed_index, segment_embed, vector_index
from .sam import SamModel

DEFAULT_CONFIG: dict = {
    "mode": "pooled",  # pooled | crop (segment_embed.MODES); pooled needs no extra forward pass
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
FILES = ("segments.json", "artwork.npy", "vectors.npy", "index.faiss", "local.npy", "local_index.faiss",
         "local_pca.npz")
DETAIL_FILES = ("detail_keypoints.npy", "detail_descriptors.npy", "detail_offsets.npy")


@dataclass
class SegmentStore:
    """All segments of a bundle, in the rows of its segment indexes."""

    records: list[dict]  # {id, artwork, bbox, area, predicted_iou, stability, rle}
    artwork: np.ndarray  # int32 [S]
    vectors: np.ndarray  # float32 [S, D]
    index: faiss.Index
    local: np.ndarray  # float32 [S, d]
    local_index: faiss.Index
    pca_mean: np.ndarray
    pca_components: np.ndarray
    detail: DetailFeatures | None = None  # per-segment detail features (None: bundle built without them)
    by_id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {r["id"]: j for j, r in enumerate(self.records)}
        # [d_in, d_out] contiguous: x @ components.T through a transposed view is ≈ 10× slower (BLAS strides).
        self._projection = np.ascontiguousarray(self.pca_components.T)

    def __len__(self) -> int:
        return len(self.records)

    def of_artwork(self, row: int) -> np.ndarray:
        return np.flatnonzero(self.artwork == row)

    def project(self, vlads: np.ndarray) -> np.ndarray:
        """Full VLADs [B, words·D] → local descriptors [B, d], L2-normalised (what local_index holds)."""
        return _project(vlads, self.pca_mean, self._projection)

    def write(self, directory: Path) -> None:
        seg_dir = directory / "segments"
        seg_dir.mkdir(parents=True, exist_ok=True)
        (seg_dir / "segments.json").write_text(json.dumps(self.records, separators=(",", ":")))
        np.save(seg_dir / "artwork.npy", self.artwork.astype(np.int32))
        np.save(seg_dir / "vectors.npy", np.ascontiguousarray(self.vectors, np.float32))
        faiss.write_index(self.index, str(seg_dir / "index.faiss"))
        np.save(seg_dir / "local.npy", np.ascontiguousarray(self.local, np.float32))
        faiss.write_index(self.local_index, str(seg_dir / "local_index.faiss"))
        np.savez(seg_dir / "local_pca.npz", mean=self.pca_mean, components=self.pca_components)
        if self.detail is not None:
            self.detail.write(seg_dir)

    @classmethod
    def load(cls, directory: Path) -> SegmentStore:
        seg_dir = directory / "segments"
        pca = np.load(seg_dir / "local_pca.npz")
        return cls(records=json.loads((seg_dir / "segments.json").read_text()),
                   artwork=np.load(seg_dir / "artwork.npy"), vectors=np.load(seg_dir / "vectors.npy", mmap_mode="r"),
                   index=faiss.read_index(str(seg_dir / "index.faiss")), local=np.load(seg_dir / "local.npy"),
                   local_index=faiss.read_index(str(seg_dir / "local_index.faiss")),
                   pca_mean=pca["mean"], pca_components=pca["components"],
                   detail=DetailFeatures.load(seg_dir) if (seg_dir / DETAIL_FILES[0]).is_file() else None)

    def consistent(self) -> bool:
        n = len(self.records)
        return (len(self.artwork) == self.vectors.shape[0] == self.index.ntotal == self.local.shape[0]
                == self.local_index.ntotal == n and (self.detail is None or self.detail.count == n))


@dataclass
class DetailFeatures:
    """Detail features of all segments, concatenated: segment j owns rows ``offsets[j]:offsets[j + 1]``."""

    keypoints: np.ndarray  # float32 [M, 2], in the bundle's analysed reference frame of the segment's artwork
    descriptors: np.ndarray  # uint8 [M, 128]
    offsets: np.ndarray  # int64 [S + 1]

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def of(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        return self.keypoints[a:b], self.descriptors[a:b]

    @classmethod
    def from_list(cls, parts: list[tuple[np.ndarray, np.ndarray]]) -> DetailFeatures:
        sizes = [len(k) for k, _ in parts]
        return cls(np.concatenate([k for k, _ in parts] or [np.zeros((0, 2))]).astype(np.float32).reshape(-1, 2),
                   np.concatenate([d for _, d in parts] or [np.zeros((0, 128))]).astype(np.uint8).reshape(-1, 128),
                   np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64))

    def write(self, seg_dir: Path) -> None:
        for name, arr in zip(DETAIL_FILES, (self.keypoints, self.descriptors, self.offsets), strict=True):
            np.save(seg_dir / name, arr)

    @classmethod
    def load(cls, seg_dir: Path) -> DetailFeatures:
        return cls(*(np.load(seg_dir / name, mmap_mode="r") for name in DETAIL_FILES))


def segment_files(description: dict | None = None) -> list[str]:
    """The segment files a bundle.json ``segments`` description names (checksummed, carried between versions)."""
    names = list(FILES) + (list(DETAIL_FILES) if (description or {}).get("detail") else [])
    return [f"segments/{f}" for f in names]


def segment_vector_index(vectors: np.ndarray, config: dict) -> tuple[faiss.Index, dict]:
    """The one place the segment vector index is built: exact below ``exact_below`` vectors, above it the
    compressed recipe of ``compressed_index`` (≈ 98 bytes per vector, nprobe tuned and recorded; measured in
    docs/index-benchmarks.md). The float vectors stay in ``vectors.npy`` (memory-mapped) for exact re-ranking."""
    return compressed_index.build_compressed_index(vectors, config)


class SegmentCollector:
    """Segments artworks one by one during the build, then builds the segment indexes once the vocabulary exists.

    Masks are not kept in memory across artworks: only their RLE and the reference keypoints they contain.
    """

    def __init__(self, sam_dir: str | Path, embedder: Embedder, config: dict | None = None,
                 feature_config: dict | None = None):
        self.cfg = {**DEFAULT_CONFIG, **(config or {})}
        self.feature_cfg = {**FEATURE_CONFIG, **(feature_config or {})}
        self.amg_cfg = {**amg.DEFAULT_CONFIG, **self.cfg["amg"]}
        if self.cfg["mode"] not in segment_embed.MODES:
            raise ModelError(f"unknown segment mode {self.cfg['mode']!r}; choose one of "
                             f"{', '.join(segment_embed.MODES)}")
        self.sam = SamModel(sam_dir)
        self.embedder = embedder
        self.records: list[dict] = []
        self.artwork: list[int] = []
        self.vectors: list[np.ndarray] = []
        self.members: list[np.ndarray] = []  # per segment: indices into its artwork's keypoints
        self.details: list[tuple[np.ndarray, np.ndarray]] = []  # per segment: detail keypoints, descriptors
        self.detail_members: list[np.ndarray] = []  # per segment: its detail keypoints inside the mask
        self.seconds = {"sam": 0.0, "embed": 0.0, "detail": 0.0}

    def add(self, row: int, object_id: str, rgb: np.ndarray, original_size: tuple[int, int],
            feats: LocalFeatures, detail_rgb: np.ndarray | None = None) -> np.ndarray:
        """Segment one artwork and embed it; returns its whole-image vector [D] (from the same forward in pooled
        mode). ``detail_rgb``: the reference at up to ``detail_side`` for the detail features (default ``rgb``)."""

        t0 = time.perf_counter()
        segs = amg.generate(self.sam, rgb, self.amg_cfg)
        t1 = time.perf_counter()
        if self.cfg["mode"] == "pooled":
            whole, vecs = segment_embed.segment_vectors_pooled(self.embedder, rgb, [s.mask for s in segs])
        else:
            whole = self.embedder.embed_arrays([rgb])[0]
            vecs = segment_embed.crop_vectors(self.embedder, rgb, segs)
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
            self.vectors.append(vec)
            self.members.append(keypoints_in_mask(seg.mask, feats, self.cfg["dilate"]))
        t2 = time.perf_counter()
        source = rgb if detail_rgb is None else detail_rgb
        for seg in segs:
            kps, desc = detail_features(source, seg.bbox, (w, h), feats.image_size, self.cfg, self.feature_cfg)
            self.details.append((kps, desc))
            inside = LocalFeatures(kps, desc, feats.image_size, feats.method)
            self.detail_members.append(keypoints_in_mask(seg.mask, inside, self.cfg["dilate"]))
        self.seconds["detail"] += time.perf_counter() - t2
        return whole

    def finish(self, descriptors_of: list[np.ndarray], vocabulary: np.ndarray) -> tuple[SegmentStore, dict]:
        """``descriptors_of[row]``: that artwork's descriptors in matching space. Returns the store and its
        description for bundle.json."""
        dim = self.embedder.dim
        vectors = np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32)
        index, index_desc = segment_vector_index(vectors, self.cfg["index"])
        vlads = np.zeros((len(self.records), vocabulary.size), np.float32)
        usable = np.zeros(len(self.records), bool)
        method = self.feature_cfg["method"]
        for j, (row, members) in enumerate(zip(self.artwork, self.members, strict=True)):
            # A segment with detail features is described by them: they are what a close-up photo shows.
            close = self.detail_members[j]
            if len(close) >= self.cfg["min_keypoints"]:
                vlads[j] = vlad_aggregate(matching_space(self.details[j][1][close], method), vocabulary)
                usable[j] = True
            elif len(members) >= self.cfg["min_keypoints"]:
                vlads[j] = vlad_aggregate(descriptors_of[row][members], vocabulary)
                usable[j] = True
        mean, components = fit_pca(vlads[usable], self.cfg["local_dims"], self.cfg["local_pca_sample"])
        local = np.zeros((len(self.records), components.shape[0]), np.float32)
        if usable.any():
            local[usable] = _project(vlads[usable], mean, np.ascontiguousarray(components.T))
        local_index, local_desc = vector_index.build_index(local, self.cfg["index"])
        detail = DetailFeatures.from_list(self.details) if self.cfg["detail_keypoints"] > 0 else None
        store = SegmentStore(self.records, np.asarray(self.artwork, np.int32), vectors, index, local, local_index,
                             mean, components, detail)
        n_art = len(set(self.artwork))
        desc = {
            "count": len(self.records), "artworks_with_segments": n_art,
            "mode": self.cfg["mode"], "sam": self.sam.info.public(), "amg": self.amg_cfg,
            "index": index_desc,
            "local": {"method": "vlad-pca", "dims": int(components.shape[0]),
                      "min_keypoints": self.cfg["min_keypoints"], "dilate": self.cfg["dilate"],
                      "with_descriptor": int(usable.sum()), "index": local_desc},
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }
        if detail is not None:
            desc["detail"] = {key: self.cfg[key] for key in ("detail_keypoints", "detail_side", "detail_max_area",
                                                             "detail_margin", "detail_max_upscale")}
            desc["detail"].update({"keypoints": int(detail.offsets[-1]),
                                   "segments_with_detail": int(np.count_nonzero(np.diff(detail.offsets)))})
        desc["files"] = segment_files(desc)
        return store, desc


def detail_features(rgb: np.ndarray, bbox: tuple[float, float, float, float], mask_frame: tuple[int, int],
                    analysed_size: tuple[int, int], cfg: dict, feature_cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT of one segment's grown bbox, cut from ``rgb`` (the reference at up to ``detail_side``) and enlarged
    to the extractor's ``max_side`` (at most ``detail_max_upscale``×). ``bbox`` is in ``mask_frame`` pixels (the
    image SAM saw); keypoints come back in the ``analysed_size`` frame (the artwork's own features')."""
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    if cfg["detail_keypoints"] <= 0:
        return empty
    x, y, bw, bh = bbox
    m = cfg["detail_margin"]
    fw, fh = mask_frame
    x0, y0 = max(0.0, x - m * bw), max(0.0, y - m * bh)
    x1, y1 = min(float(fw), x + bw * (1 + m)), min(float(fh), y + bh * (1 + m))
    if (x1 - x0) * (y1 - y0) > cfg["detail_max_area"] * fw * fh or x1 - x0 < 2 or y1 - y0 < 2:
        return empty  # (nearly) the whole artwork: its own features already cover it at this scale
    h, w = rgb.shape[:2]
    sx, sy = w / fw, h / fh  # mask frame → detail image
    c0, r0 = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    c1, r1 = int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))
    crop = to_gray(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
    scale = min(feature_cfg["max_side"] / max(crop.shape), cfg["detail_max_upscale"])
    if scale > 1.0:  # enlarge here; extract() only ever shrinks
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                          interpolation=cv2.INTER_CUBIC)
    feats = extract(crop, {**feature_cfg, "max_keypoints": cfg["detail_keypoints"]})
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


def keypoints_in_box(feats_keypoints: np.ndarray, analysed_size: tuple[int, int], bbox: list[float],
                     original_size: tuple[int, int], margin: float) -> np.ndarray:
    """Bool mask of reference keypoints inside a segment's bbox grown by ``margin`` of its size on each side."""
    x, y, bw, bh = bbox
    sx, sy = analysed_size[0] / original_size[0], analysed_size[1] / original_size[1]
    x0, x1 = (x - margin * bw) * sx, (x + bw * (1 + margin)) * sx
    y0, y1 = (y - margin * bh) * sy, (y + bh * (1 + margin)) * sy
    kx, ky = feats_keypoints[:, 0], feats_keypoints[:, 1]
    return (kx >= x0) & (kx <= x1) & (ky >= y0) & (ky <= y1)


def fit_pca(vlads: np.ndarray, dims: int, sample: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plain PCA of segment VLADs (``verification.vlad.fit_projection`` without whitening, on at most ``sample``
    of them): (mean [d_in], components [d_out, d_in])."""
    d_in = vlads.shape[1]
    if len(vlads) > sample:
        vlads = vlads[np.sort(np.random.default_rng(seed).choice(len(vlads), sample, replace=False))]
    projection = fit_vlad_projection(vlads, d_in // 128, {"pca_dims": dims, "whiten_power": 0.0})
    if projection is None:  # nothing to learn from: one all-zero component keeps the index well-formed
        return np.zeros(d_in, np.float32), np.zeros((1, d_in), np.float32)
    return vlads.mean(axis=0).astype(np.float32), projection.matrix


def _project(vlads: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``projection``: the PCA components transposed, [d_in, d_out]."""
    out = (np.atleast_2d(vlads) - mean) @ projection
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def descriptors_in_matching_space(features, method: str) -> list[np.ndarray]:
    """Per artwork, its reference descriptors as matching-space floats (for the segment VLADs)."""
    space = matching_space(np.asarray(features.descriptors), method)
    return [space[features.offsets[i]:features.offsets[i + 1]] for i in range(len(features))]
