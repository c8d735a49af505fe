"""Descriptor votes, the weight-free shortlist: a photo's descriptors each vote for the artwork of their nearest
reference descriptor, weighted by its lead over the nearest descriptor of any other artwork (Lowe's ratio test
across the collection). The index is built by indexing/descriptor_votes.py; why: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from artlens.config import with_defaults

SEARCH_CONFIG: dict = {  # query-time settings (the recognizer's "votes" config)
    "enabled": True,
    "nprobe": 8,  # lists visited per query descriptor
    "neighbours": 10,  # nearest reference descriptors looked up per query descriptor
    # OpenMP threads of the search (0: FAISS's default, one per core). One thread costs two thirds of the CPU time
    # of two, and every thread that searches (the service's recognitions at once, the feature thread beside the
    # forward pass) would otherwise start its own team of one thread per core; a fixed count also makes the
    # neighbours independent of the machine's cores (docs/benchmarks.md, "Per-request overhead").
    "threads": 1,
}


def vote_scores(sims: np.ndarray, ids: np.ndarray, owner: np.ndarray | OffsetOwner, rows: int) -> np.ndarray:
    """Summed votes per artwork row, float [rows], from a k-NN search of a photo's descriptors.

    ``sims``/``ids`` [Q, k] best first (ids -1: missing); ``owner`` [total] row of each reference descriptor.
    Each query descriptor gives its nearest neighbour's artwork sim(1st) − sim(nearest of another artwork), or
    − sim(k-th) when all k neighbours belong to that artwork (a lower bound of its lead)."""
    if sims.size == 0:
        return np.zeros(rows)
    own = np.where(ids >= 0, owner[np.maximum(ids, 0)], -1)
    first = own[:, 0]
    other = (own != first[:, None]) & (ids >= 0)
    j = np.where(other.any(axis=1), other.argmax(axis=1), ids.shape[1] - 1)
    lead = sims[:, 0] - sims[np.arange(len(sims)), j]
    valid = first >= 0
    return np.bincount(first[valid], weights=np.maximum(lead[valid], 0.0), minlength=rows)[:rows]


def vote_ranking(index: faiss.Index, owner: np.ndarray | OffsetOwner, query_descriptors: np.ndarray, rows: int, k: int,
                 config: dict | None = None, allowed: np.ndarray | None = None) -> list[int]:
    """The ``k`` artwork rows with most votes (only rows that got any), best first; ``allowed`` restricts them.

    ``query_descriptors``: the photo's descriptors in matching space."""
    cfg = with_defaults(SEARCH_CONFIG, config)
    if len(query_descriptors) == 0 or index.ntotal == 0:
        return []
    params = faiss.SearchParametersIVF(nprobe=int(cfg["nprobe"]))  # per call: the index is shared by threads
    with _openmp_threads(int(cfg["threads"])):
        sims, ids = index.search(np.ascontiguousarray(query_descriptors, np.float32), int(cfg["neighbours"]),
                                 params=params)
    scores = vote_scores(sims, ids, owner, rows)
    if allowed is not None:
        keep = np.zeros(rows, bool)
        keep[np.asarray(allowed, dtype=np.int64)] = True
        scores = np.where(keep, scores, 0.0)
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(r) for r in order if scores[r] > 0]


@contextmanager
def _openmp_threads(threads: int) -> Iterator[None]:
    """OpenMP's thread count for the calling thread only (an OpenMP setting of each thread), restored after."""
    if threads <= 0:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def descriptor_owner(offsets: np.ndarray) -> np.ndarray:
    """Row of every reference descriptor, int32 [total], from the features' offsets."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int32), np.diff(offsets))


class OffsetOwner:
    """The row of reference descriptors by position, looked up in the offsets when asked: indexing it like
    :func:`descriptor_owner`'s array gives the same rows, without holding 4 bytes per descriptor (400 MB at 10⁵
    artworks) — a photo asks for a few thousand."""

    def __init__(self, offsets: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return (np.searchsorted(self.offsets, positions, side="right") - 1).astype(np.int32)

    def __len__(self) -> int:
        return int(self.offsets[-1])
