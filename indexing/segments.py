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

``bbox`` is [x, y, w, h] in pixels of the original reference image; ``rle`` is COCO RLE of the mask at its
working resolution (``amg`` ``mask_side``), spanning the whole image. Polygons are derived on demand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np

from artlens.embedder import Embedder
from artlens.errors import ModelError
from artlens.verification import LocalFeatures, matching_space, vlad_aggregate

from . import amg, segment_embed, vector_index
from .sam import SamModel

DEFAULT_CONFIG: dict = {
    "mode": "pooled",  # pooled | crop (segment_embed.MODES); pooled needs no extra forward pass
    "amg": amg.DEFAULT_CONFIG,
    "local_dims": 128,  # PCA dimensions of a segment's VLAD (full VLAD: 128 words × 128 = 16,384 floats)
    "local_pca_sample": 4096,  # segment VLADs the PCA is fitted on (Gram-matrix PCA: cost grows with its square)
    "min_keypoints": 8,  # a segment with fewer reference keypoints gets no local descriptor (a zero vector)
    "dilate": 3,  # mask pixels (at mask_side) a mask grows by before collecting keypoints: SIFT fires on edges
    "index": vector_index.DEFAULT_CONFIG,
}
FILES = ("segments.json", "artwork.npy", "vectors.npy", "index.faiss", "local.npy", "local_index.faiss",
         "local_pca.npz")


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

    @classmethod
    def load(cls, directory: Path) -> SegmentStore:
        seg_dir = directory / "segments"
        pca = np.load(seg_dir / "local_pca.npz")
        return cls(records=json.loads((seg_dir / "segments.json").read_text()),
                   artwork=np.load(seg_dir / "artwork.npy"), vectors=np.load(seg_dir / "vectors.npy", mmap_mode="r"),
                   index=faiss.read_index(str(seg_dir / "index.faiss")), local=np.load(seg_dir / "local.npy"),
                   local_index=faiss.read_index(str(seg_dir / "local_index.faiss")),
                   pca_mean=pca["mean"], pca_components=pca["components"])

    def consistent(self) -> bool:
        n = len(self.records)
        return (len(self.artwork) == self.vectors.shape[0] == self.index.ntotal == self.local.shape[0]
                == self.local_index.ntotal == n)


def segment_files() -> list[str]:
    return [f"segments/{f}" for f in FILES]


def segment_vector_index(vectors: np.ndarray, config: dict) -> tuple[faiss.Index, dict]:
    """The one place the segment vector index is built: exact / HNSW today (``vector_index``); the compressed
    builder (PQ / scalar quantisation for millions of segments) plugs in here."""
    return vector_index.build_index(vectors, config)


class SegmentCollector:
    """Segments artworks one by one during the build, then builds the segment indexes once the vocabulary exists.

    Masks are not kept in memory across artworks: only their RLE and the reference keypoints they contain.
    """

    def __init__(self, sam_dir: str | Path, embedder: Embedder, config: dict | None = None):
        self.cfg = {**DEFAULT_CONFIG, **(config or {})}
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
        self.seconds = {"sam": 0.0, "embed": 0.0}

    def add(self, row: int, object_id: str, rgb: np.ndarray, original_size: tuple[int, int],
            feats: LocalFeatures) -> np.ndarray:
        """Segment one artwork and embed it; returns its whole-image vector [D] (from the same forward in pooled
        mode)."""
        import time

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
        return whole

    def finish(self, descriptors_of: list[np.ndarray], vocabulary: np.ndarray) -> tuple[SegmentStore, dict]:
        """``descriptors_of[row]``: that artwork's descriptors in matching space. Returns the store and its
        description for bundle.json."""
        dim = self.embedder.dim
        vectors = np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32)
        index, index_desc = segment_vector_index(vectors, self.cfg["index"])
        vlads = np.zeros((len(self.records), vocabulary.size), np.float32)
        usable = np.zeros(len(self.records), bool)
        for j, (row, members) in enumerate(zip(self.artwork, self.members, strict=True)):
            if len(members) >= self.cfg["min_keypoints"]:
                vlads[j] = vlad_aggregate(descriptors_of[row][members], vocabulary)
                usable[j] = True
        mean, components = fit_pca(vlads[usable], self.cfg["local_dims"], self.cfg["local_pca_sample"])
        local = np.zeros((len(self.records), components.shape[0]), np.float32)
        if usable.any():
            local[usable] = _project(vlads[usable], mean, np.ascontiguousarray(components.T))
        local_index, local_desc = vector_index.build_index(local, self.cfg["index"])
        store = SegmentStore(self.records, np.asarray(self.artwork, np.int32), vectors, index, local, local_index,
                             mean, components)
        n_art = len(set(self.artwork))
        desc = {
            "count": len(self.records), "artworks_with_segments": n_art,
            "mode": self.cfg["mode"], "sam": self.sam.info.public(), "amg": self.amg_cfg,
            "index": index_desc,
            "local": {"method": "vlad-pca", "dims": int(components.shape[0]),
                      "min_keypoints": self.cfg["min_keypoints"], "dilate": self.cfg["dilate"],
                      "with_descriptor": int(usable.sum()), "index": local_desc},
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "files": segment_files(),
        }
        return store, desc


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
    """PCA of VLADs through the Gram matrix (n ≪ words·D): (mean [d_in], components [d_out, d_in])."""
    d_in = vlads.shape[1]
    if len(vlads) > sample:
        vlads = vlads[np.sort(np.random.default_rng(seed).choice(len(vlads), sample, replace=False))]
    if len(vlads) < 2:  # nothing to learn from: one all-zero component keeps the index well-formed
        return np.zeros(d_in, np.float32), np.zeros((1, d_in), np.float32)
    mean = vlads.mean(axis=0)
    centred = (vlads - mean).astype(np.float64)
    gram = centred @ centred.T
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(-values)
    keep = [i for i in order[:dims] if values[i] > 1e-9 * max(values[order[0]], 1e-30)]
    # Right singular vectors: Xᵀ u / sqrt(λ) are unit eigenvectors of the covariance.
    components = (centred.T @ vectors[:, keep]) / np.sqrt(values[keep])
    return mean.astype(np.float32), np.ascontiguousarray(components.T, np.float32)


def _project(vlads: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``projection``: the PCA components transposed, [d_in, d_out]."""
    out = (np.atleast_2d(vlads) - mean) @ projection
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def descriptors_in_matching_space(features, method: str) -> list[np.ndarray]:
    """Per artwork, its reference descriptors as matching-space floats (for the segment VLADs)."""
    space = matching_space(np.asarray(features.descriptors), method)
    return [space[features.offsets[i]:features.offsets[i + 1]] for i in range(len(features))]
