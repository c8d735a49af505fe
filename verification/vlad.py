"""VLAD: local descriptors aggregated into one vector (Jégou et al. 2010), a shortlist that needs no weights.

The visual vocabulary is learnt per bundle by k-means on the references' own descriptors. Residuals are
power-normalised and intra-normalised (Arandjelović & Zisserman, "All about VLAD"), then L2-normalised, so
inner product ranks references by how much of their local appearance a photo shares.
"""

from __future__ import annotations

import faiss
import numpy as np

DEFAULT_CONFIG: dict = {
    "words": 128,  # SMVS shortlist recall@10: 0.67 (16), 0.78 (64), 0.85 (128) — docs/benchmarks.md
    "train_sample": 200_000,
    "iterations": 20,
    "seed": 1,
}


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
