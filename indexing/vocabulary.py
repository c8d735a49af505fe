"""Training the VLAD shortlist of a bundle: the visual vocabulary (k-means) and the PCA-whitening projection.

Both are learnt per bundle on the references' own descriptors and VLADs; encoding with them is the read side
(artlens.indexing.store.vlad). Measured choices (words, dims, whitening): docs/benchmarks.md.
"""

from __future__ import annotations

import faiss
import numpy as np

from artlens.config import with_defaults
from artlens.indexing.store.vlad import Projection

DEFAULT_CONFIG: dict = {
    "words": 128,  # SMVS shortlist recall@10: 0.67 (16), 0.78 (64), 0.85 (128) — docs/benchmarks.md
    "train_sample": 200_000,
    "iterations": 20,
    "seed": 1,
    # PCA-whitened compact VLAD (0 keeps the raw VLAD): SMVS/Estense/Met shortlist recall in docs/benchmarks.md.
    "pca_dims": 128,
    "whiten_power": 0.5,  # eigenvalue^-power: 0.5 is full whitening, 0 plain PCA
}


def train_vocabulary(descriptors: np.ndarray, config: dict | None = None) -> np.ndarray:
    """k-means centroids float32 [words, D] from matching-space descriptors."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(data) > cfg["train_sample"]:
        pick = np.random.default_rng(cfg["seed"]).choice(len(data), cfg["train_sample"], replace=False)
        data = data[np.sort(pick)]
    words = min(cfg["words"], max(1, len(data) // 39))  # FAISS k-means wants ≥ 39 points per centroid
    kmeans = faiss.Kmeans(data.shape[1], words, niter=cfg["iterations"], seed=cfg["seed"], verbose=False)
    kmeans.train(data)
    return kmeans.centroids.astype(np.float32)


def fit_projection(vlads: np.ndarray, words: int, config: dict | None = None) -> Projection | None:
    """PCA(-whitening) learnt on raw VLADs [N, words * D]; None when ``pca_dims`` is 0 or there are too few."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
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
