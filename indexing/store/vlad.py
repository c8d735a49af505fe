"""VLAD: local descriptors aggregated into one vector (Jégou et al. 2010), the shortlist that needs no weights.

Residuals to the bundle's visual words are power- and intra-normalised, then L2-normalised; a learnt
PCA-whitening (``Projection``) reduces them to the compact vectors the bundle's VLAD index holds. The training
of both (vocabulary, projection) is a builder: indexing/vocabulary.py. Why and what it measures: docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import faiss
import numpy as np

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


def aggregate(descriptors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """One L2-normalised VLAD vector, float32 [words * D] (zeros when there are no descriptors)."""
    return aggregate_regions(descriptors, vocabulary, [np.ones(len(descriptors), dtype=bool)])[0]


def aggregate_regions(descriptors: np.ndarray, vocabulary: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """The VLAD of each keypoint subset of one image (``masks``: boolean, one per subset), float32 [len(masks),
    words * D]: for every mask what :func:`aggregate` gives for ``descriptors[mask]``, with each descriptor's nearest
    word and residual computed once for all subsets (the subsets of a photo overlap: the whole image and its
    regions)."""
    words, dim = vocabulary.shape
    out = np.zeros((len(masks), words * dim), dtype=np.float32)
    if not len(descriptors):
        return out
    assign = np.argmax(descriptors @ vocabulary.T, axis=1)  # nearest word (unit vectors, near-unit centroids)
    residuals = descriptors - vocabulary[assign]
    # Element (word, d) of a VLAD is at word * D + d: one np.add.at over single elements takes NumPy's fast path
    # (adding whole rows does not, at ~1 µs a row) and adds the same float32 values in the same descriptor order.
    cells = assign[:, None] * dim + np.arange(dim)
    for vector, mask in zip(out, masks, strict=True):
        if mask.any():
            np.add.at(vector, cells[mask].ravel(), residuals[mask].ravel())
            vector[:] = _normalised(vector.reshape(words, dim))
    return out


def _normalised(sums: np.ndarray) -> np.ndarray:
    """Power-, intra- and L2-normalised VLAD [words * D] from the residual sums per word [words, D]."""
    sums = np.sign(sums) * np.sqrt(np.abs(sums))
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    flat = sums.ravel()
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
