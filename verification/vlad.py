"""VLAD: local descriptors aggregated into one vector (Jégou et al. 2010), a shortlist that needs no weights.

The visual vocabulary is learnt per bundle by k-means on the references' own descriptors. Residuals are
power-normalised and intra-normalised (Arandjelović & Zisserman, "All about VLAD"), then L2-normalised, so
inner product ranks references by how much of their local appearance a photo shares.

The raw VLAD (words × 128 = 16k dims) is then reduced by PCA with whitening and L2-normalised again (Jégou & Chum,
"Negative evidences and co-occurrences in image retrieval", ECCV 2012): whitening down-weights the directions
that bursty, frequent structures (frame edges, canvas texture) dominate, and the compact vector (``compact``)
is 128× smaller. The PCA is learnt per bundle on the references' VLADs of the whole image and of overlapping
regions (the regions :func:`regions` gives queries too), so there are several samples per artwork.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import faiss
import numpy as np

DEFAULT_CONFIG: dict = {
    "words": 128,  # SMVS shortlist recall@10: 0.67 (16), 0.78 (64), 0.85 (128) — docs/benchmarks.md
    "train_sample": 200_000,
    "iterations": 20,
    "seed": 1,
    # PCA-whitened compact VLAD (0 keeps the raw VLAD): SMVS/Estense/Met shortlist recall in docs/benchmarks.md.
    "pca_dims": 128,
    "whiten_power": 0.5,  # eigenvalue^-power: 0.5 is full whitening, 0 plain PCA
}

# Regions of an image whose VLADs the shortlist uses besides the whole one: 4 overlapping quadrants of 60 % and the
# centre (x0, y0, x1, y1 as fractions). A painting that fills a small part of a gallery-wall photo dominates one.
REGIONS = ((0, 0, .6, .6), (.4, 0, 1, .6), (0, .4, .6, 1), (.4, .4, 1, 1), (.2, .2, .8, .8))


@dataclass(frozen=True)
class Projection:
    """PCA(-whitening) of raw VLADs: ``compact = l2(matrix @ vlad + bias)`` (bias = -matrix @ mean)."""

    matrix: np.ndarray  # float32 [dims, words * D]
    bias: np.ndarray  # float32 [dims]
    words: int

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[0])

    @cached_property
    def blocks(self) -> np.ndarray:
        """The matrix as one [D, dims] block per visual word, float32 [words, D, dims] (see :func:`compact`)."""
        dims, dim = self.matrix.shape
        return np.ascontiguousarray(self.matrix.reshape(dims, self.words, dim // self.words).transpose(1, 2, 0))


def train_vocabulary(descriptors: np.ndarray, config: dict | None = None) -> np.ndarray:
    """k-means centroids float32 [words, D] from matching-space descriptors."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(data) > cfg["train_sample"]:
        pick = np.random.default_rng(cfg["seed"]).choice(len(data), cfg["train_sample"], replace=False)
        data = data[np.sort(pick)]
    words = min(cfg["words"], max(1, len(data) // 39))  # FAISS k-means wants ≥ 39 points per centroid
    kmeans = faiss.Kmeans(data.shape[1], words, niter=cfg["iterations"], seed=cfg["seed"], verbose=False)
    kmeans.train(data)
    return kmeans.centroids.astype(np.float32)


def aggregate(descriptors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """One L2-normalised VLAD vector, float32 [words * D] (zeros when there are no descriptors)."""
    words, dim = vocabulary.shape
    out = np.zeros((words, dim), dtype=np.float32)
    if len(descriptors):
        assign = np.argmax(descriptors @ vocabulary.T, axis=1)  # nearest word (unit vectors, near-unit centroids)
        np.add.at(out, assign, descriptors - vocabulary[assign])
        out = np.sign(out) * np.sqrt(np.abs(out))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    flat = out.ravel()
    return flat / max(float(np.linalg.norm(flat)), 1e-12)


def region_masks(keypoints: np.ndarray, image_size: tuple[int, int], min_keypoints: int = 20) -> list[np.ndarray]:
    """Keypoint masks: the whole image, then each of :data:`REGIONS` holding at least ``min_keypoints``."""
    n = len(keypoints)
    masks = [np.ones(n, dtype=bool)]
    if n == 0:
        return masks
    w, h = image_size
    x, y = keypoints[:, 0] / w, keypoints[:, 1] / h
    for x0, y0, x1, y1 in REGIONS:
        mask = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        if mask.sum() >= min_keypoints:
            masks.append(mask)
    return masks


def fit_projection(vlads: np.ndarray, words: int, config: dict | None = None) -> Projection | None:
    """PCA(-whitening) learnt on raw VLADs [N, words * D]; None when ``pca_dims`` is 0 or there are too few."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    if not cfg["pca_dims"] or len(vlads) < 3:
        return None
    x = np.asarray(vlads, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    # Eigen-decomposition of the N × N Gram matrix: N (samples) is far below the VLAD dimension.
    lam, vec = np.linalg.eigh(centred @ centred.T)
    keep = np.argsort(-lam, kind="stable")[: min(cfg["pca_dims"], len(x) - 1)]
    lam, vec = np.maximum(lam[keep], 1e-12), vec[:, keep]
    directions = (centred.T @ vec) / np.sqrt(lam)  # unit principal directions [words * D, dims]
    variance = lam / len(x)
    matrix = np.ascontiguousarray((directions / variance ** cfg["whiten_power"]).T, dtype=np.float32)
    return Projection(matrix, (-(matrix @ mean)).astype(np.float32), int(words))


def compact(vlads: np.ndarray, projection: Projection | None) -> np.ndarray:
    """Raw VLAD(s) [..., words * D] → L2-normalised compact vector(s) [..., dims] (unchanged without projection).

    The compact space is what the bundle's VLAD index holds; use it for any further VLAD vectors (segments, …).
    """
    v = np.asarray(vlads, dtype=np.float32)
    if projection is None:
        return v
    flat = v.reshape(-1, v.shape[-1])
    # One small product per visual word, summed, instead of one [dims, 16k] product: each stays below BLAS's
    # multi-threading threshold, so a few query vectors cost the same on a busy server as on an idle one.
    per_word = flat.reshape(len(flat), projection.words, -1).transpose(1, 0, 2)
    y = np.matmul(per_word, projection.blocks).sum(axis=0) + projection.bias
    y /= np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    return y.reshape(*v.shape[:-1], projection.dims).astype(np.float32)


def encode(descriptors: np.ndarray, vocabulary: np.ndarray, projection: Projection | None) -> np.ndarray:
    """Matching-space descriptors of one image (or segment) → its compact VLAD [dims]."""
    return compact(aggregate(descriptors, vocabulary), projection)


def projection_index(projection: Projection | None, index: faiss.Index) -> faiss.Index:
    """Store the projection with an index of compact VLADs, in one FAISS file: FAISS applies the projection and the
    L2 normalisation when it is searched with raw VLADs. Bundles without a projection hold raw VLADs."""
    if projection is None:
        return index
    dims, dim = projection.matrix.shape
    linear = faiss.LinearTransform(dim, dims, True)
    faiss.copy_array_to_vector(projection.matrix.ravel(), linear.A)
    faiss.copy_array_to_vector(projection.bias, linear.b)
    linear.is_trained = True
    wrapped = faiss.IndexPreTransform(faiss.NormalizationTransform(dims, 2.0), index)
    wrapped.prepend_transform(linear)
    return wrapped


def split_index(index: faiss.Index, words: int) -> tuple[Projection | None, faiss.Index]:
    """(projection, index of compact VLADs) from a :func:`projection_index` index; (None, index) for raw VLADs.
    Searching the inner index with :func:`compact` vectors is what the recognizer does (see ``compact`` on threads).
    """
    if not isinstance(index, faiss.IndexPreTransform):
        return None, index
    linear = faiss.downcast_VectorTransform(index.chain.at(0))
    matrix = faiss.vector_to_array(linear.A).reshape(linear.d_out, linear.d_in)
    return Projection(matrix, faiss.vector_to_array(linear.b), int(words)), faiss.downcast_index(index.index)
