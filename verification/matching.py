"""Descriptor matching: nearest neighbour with Lowe's ratio test and an optional mutual check.

``ratio: None`` turns the ratio test off: with ``mutual`` that is plain mutual nearest neighbours (MNN), how
learned descriptors such as XFeat's are matched.
"""

from __future__ import annotations

import cv2
import numpy as np

from artlens.config import with_defaults

DEFAULT_CONFIG: dict = {
    "ratio": 0.85,  # Lowe's ratio on distances; RANSAC removes what the looser ratio lets through; None: no test
    "mutual": True,
}


# Rows of the similarity matrix reduced at a time: a block stays in L2 cache across its three passes; the whole
# matrix (up to 1000 × 1000 float32) does not.
_BLOCK_ROWS = 256


def match_float(query: np.ndarray, ref: np.ndarray, config: dict | None = None) -> np.ndarray:
    """Match unit-vector descriptors; returns int32 [M, 2] (query index, reference index).

    One matrix product serves both directions: per photo descriptor its best and second-best reference
    descriptor (the ratio test), per reference descriptor the best photo descriptor (the mutual check; on equal
    similarities the first photo descriptor, as ``argmax`` picks)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    if len(query) < 2 or len(ref) < 2:
        return np.zeros((0, 2), np.int32)
    sim = query @ ref.T  # [Nq, Nr]; one BLAS call: the same sums whatever the blocking below
    best, s_best, s_second, column_rest = _top_two(sim)
    rows = np.arange(len(sim))
    if cfg["ratio"] is None:  # no ratio test: with ``mutual``, plain mutual nearest neighbours
        keep = np.ones(len(rows), dtype=bool)
    else:
        # Squared L2 distance between unit vectors is 2 - 2·sim.
        d_best = np.sqrt(np.maximum(2.0 - 2.0 * s_best, 0.0))
        d_second = np.sqrt(np.maximum(2.0 - 2.0 * s_second, 0.0))
        keep = d_best < cfg["ratio"] * d_second
    if cfg["mutual"]:
        keep &= _column_owner(sim, best, s_best, column_rest)[best] == rows
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int32)


def _top_two(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: argmax, max and second max; per column: the max over the entries that are not their row's argmax.
    Each row's argmax entry is overwritten with -inf (``sim`` is scratch)."""
    n_rows = len(sim)
    best = np.empty(n_rows, np.intp)
    s_best = np.empty(n_rows, sim.dtype)
    s_second = np.empty(n_rows, sim.dtype)
    column_rest = np.full(sim.shape[1], -np.inf, sim.dtype)
    offsets = np.arange(min(_BLOCK_ROWS, n_rows))
    for start in range(0, n_rows, _BLOCK_ROWS):
        block = sim[start:start + _BLOCK_ROWS]
        stop, local = start + len(block), offsets[: len(block)]
        best[start:stop] = block.argmax(axis=1)
        s_best[start:stop] = block[local, best[start:stop]]
        block[local, best[start:stop]] = -np.inf  # argmax twice is much cheaper than argpartition
        np.maximum(column_rest, block.max(axis=0), out=column_rest)
        s_second[start:stop] = block.max(axis=1)
    return best, s_best, s_second, column_rest


def _column_owner(masked: np.ndarray, best: np.ndarray, s_best: np.ndarray, column_rest: np.ndarray) -> np.ndarray:
    """Per column, the first row holding its maximum: ``argmax(axis=0)`` of the matrix before masking, for the
    columns where that row's own best lies (elsewhere ``len(masked)``: no match can pass there). Read off the row
    results, because an argmax down the columns of a C-ordered matrix copies it whole, which cost more than all
    the rest after the product."""
    n_rows = len(masked)
    column_max = column_rest.copy()
    np.maximum.at(column_max, best, s_best)
    holders = np.flatnonzero(s_best == column_max[best])  # rows whose best entry is their column's maximum
    owner = np.full(len(column_max), n_rows, np.intp)
    np.minimum.at(owner, best[holders], holders)
    # Exact ties with a row whose best lies elsewhere: that row may come first. Rare; look those columns up.
    columns = best[holders]
    for column in np.unique(columns[column_rest[columns] == column_max[columns]]).tolist():
        first_other = int(np.argmax(masked[:, column] == column_max[column]))
        owner[column] = min(owner[column], first_other)
    return owner


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
        if len(m) == 2 and (cfg["ratio"] is None or m[0].distance < cfg["ratio"] * m[1].distance):
            pairs.append((m[0].queryIdx, m[0].trainIdx))
            prev = best_for_ref.get(m[0].trainIdx)
            if prev is None or m[0].distance < prev[0]:
                best_for_ref[m[0].trainIdx] = (m[0].distance, m[0].queryIdx)
    if cfg["mutual"]:
        pairs = [p for p in pairs if best_for_ref[p[1]][1] == p[0]]
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)
