"""The segments of a bundle (``segments/``), read: SAM masks per artwork, their vectors and the two segment indexes.

Built by indexing/segment_collection.py; the files, what each segment's vectors are and why: docs/segments.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

FILES = ("segments.json", "artwork.npy", "vectors.npy", "index.faiss", "local.npy", "local_index.faiss",
         "local_pca.npz")
DINOV2_FILES = ("vectors.npy", "index.faiss")  # absent when bundle.json's segments "mode" is "none"
DETAIL_FILES = ("detail_keypoints.npy", "detail_descriptors.npy", "detail_offsets.npy")


@dataclass
class SegmentStore:
    """All segments of a bundle, in the rows of its segment indexes."""

    records: list[dict]  # {id, artwork, bbox, area, predicted_iou, stability, rle}
    artwork: np.ndarray  # int32 [S]
    vectors: np.ndarray | None  # float32 [S, D] DINOv2 segment vectors; None: built without (mode "none")
    index: faiss.Index | None  # over ``vectors``
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
        return project_local(vlads, self.pca_mean, self._projection)

    def write(self, directory: Path) -> None:
        seg_dir = directory / "segments"
        seg_dir.mkdir(parents=True, exist_ok=True)
        (seg_dir / "segments.json").write_text(json.dumps(self.records, separators=(",", ":")))
        np.save(seg_dir / "artwork.npy", self.artwork.astype(np.int32))
        if self.vectors is not None:
            np.save(seg_dir / "vectors.npy", np.ascontiguousarray(self.vectors, np.float32))
            faiss.write_index(self.index, str(seg_dir / "index.faiss"))
        np.save(seg_dir / "local.npy", np.ascontiguousarray(self.local, np.float32))
        faiss.write_index(self.local_index, str(seg_dir / "local_index.faiss"))
        np.savez(seg_dir / "local_pca.npz", mean=self.pca_mean, components=self.pca_components)
        if self.detail is not None:
            self.detail.write(seg_dir)

    @classmethod
    def load(cls, directory: Path, description: dict | None = None) -> SegmentStore:
        """The store in ``directory``/segments; ``description``: bundle.json's "segments" (says whether it holds
        DINOv2 vectors)."""
        seg_dir = directory / "segments"
        pca = np.load(seg_dir / "local_pca.npz")
        with_vectors = has_dinov2_vectors(description)
        return cls(records=json.loads((seg_dir / "segments.json").read_text()),
                   artwork=np.load(seg_dir / "artwork.npy"),
                   vectors=np.load(seg_dir / "vectors.npy", mmap_mode="r") if with_vectors else None,
                   index=faiss.read_index(str(seg_dir / "index.faiss")) if with_vectors else None,
                   local=np.load(seg_dir / "local.npy"),
                   local_index=faiss.read_index(str(seg_dir / "local_index.faiss")),
                   pca_mean=pca["mean"], pca_components=pca["components"],
                   detail=DetailFeatures.load(seg_dir) if (seg_dir / DETAIL_FILES[0]).is_file() else None)

    def consistent(self) -> bool:
        n = len(self.records)
        vectors_ok = self.vectors is None or self.vectors.shape[0] == self.index.ntotal == n
        return (vectors_ok and len(self.artwork) == self.local.shape[0] == self.local_index.ntotal == n
                and (self.detail is None or self.detail.count == n))


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


def has_dinov2_vectors(description: dict | None) -> bool:
    """Whether a bundle.json ``segments`` description has DINOv2 segment vectors (mode "pooled" or "crop"); mode
    "none": a bundle built without global embeddings, whose segments are searched by their local descriptors."""
    return (description or {}).get("mode") != "none"


def segment_files(description: dict | None = None) -> list[str]:
    """The segment files a bundle.json ``segments`` description names (checksummed, carried between versions)."""
    names = [f for f in FILES if has_dinov2_vectors(description) or f not in DINOV2_FILES]
    names += list(DETAIL_FILES) if (description or {}).get("detail") else []
    return [f"segments/{f}" for f in names]


def keypoints_in_box(keypoints: np.ndarray, analysed_size: tuple[int, int], bbox: list[float],
                     original_size: tuple[int, int], margin: float) -> np.ndarray:
    """Bool mask of reference keypoints inside a segment's bbox grown by ``margin`` of its size on each side."""
    x, y, bw, bh = bbox
    sx, sy = analysed_size[0] / original_size[0], analysed_size[1] / original_size[1]
    x0, x1 = (x - margin * bw) * sx, (x + bw * (1 + margin)) * sx
    y0, y1 = (y - margin * bh) * sy, (y + bh * (1 + margin)) * sy
    kx, ky = keypoints[:, 0], keypoints[:, 1]
    return (kx >= x0) & (kx <= x1) & (ky >= y0) & (ky <= y1)


def project_local(vlads: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Full VLADs [B, words·D] → L2-normalised local descriptors [B, d]; ``projection``: the PCA components
    transposed, [d_in, d_out]."""
    out = (np.atleast_2d(vlads) - mean) @ projection
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
