"""Descriptor matching: nearest neighbour with Lowe's ratio test and an optional mutual check."""

from __future__ import annotations

import cv2
import numpy as np

from artlens.config import with_defaults

DEFAULT_CONFIG: dict = {
    "ratio": 0.85,  # Lowe's ratio on distances; RANSAC removes what the looser ratio lets through
    "mutual": True,
}


def match_float(query: np.ndarray, ref: np.ndarray, config: dict | None = None) -> np.ndarray:
    """Match unit-vector descriptors; returns int32 [M, 2] (query index, reference index)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    if len(query) < 2 or len(ref) < 2:
        return np.zeros((0, 2), np.int32)
    sim = query @ ref.T  # [Nq, Nr]
    rows = np.arange(sim.shape[0])
    best = np.argmax(sim, axis=1)
    s_best = sim[rows, best]
    ref_best = np.argmax(sim, axis=0)  # for the mutual check, before the best column is masked out
    sim[rows, best] = -np.inf  # argmax twice is much cheaper than argpartition on [Nq, Nr]
    s_second = sim.max(axis=1)
    # Squared L2 distance between unit vectors is 2 - 2·sim.
    d_best = np.sqrt(np.maximum(2.0 - 2.0 * s_best, 0.0))
    d_second = np.sqrt(np.maximum(2.0 - 2.0 * s_second, 0.0))
    keep = d_best < cfg["ratio"] * d_second
    if cfg["mutual"]:
        keep &= ref_best[best] == rows
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int32)


def match_binary(query: np.ndarray, ref: np.ndarray, config: dict | None = None) -> np.ndarray:
    """Hamming matching for ORB/AKAZE descriptors, same contract as :func:`match_float`."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    if len(query) < 2 or len(ref) < 2:
        return np.zeros((0, 2), np.int32)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = []
    knn = matcher.knnMatch(query, ref, k=2)
    best_for_ref: dict[int, tuple[float, int]] = {}
    for m in knn:
        if len(m) == 2 and m[0].distance < cfg["ratio"] * m[1].distance:
            pairs.append((m[0].queryIdx, m[0].trainIdx))
            prev = best_for_ref.get(m[0].trainIdx)
            if prev is None or m[0].distance < prev[0]:
                best_for_ref[m[0].trainIdx] = (m[0].distance, m[0].queryIdx)
    if cfg["mutual"]:
        pairs = [p for p in pairs if best_for_ref[p[1]][1] == p[0]]
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)
