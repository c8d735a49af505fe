"""Searching the bundle's FAISS indexes: exact or HNSW (``search``, with an allowed-rows filter) and compressed
IVF indexes with exact re-ranking (``search_compressed``, the segment vectors). Built by indexing/vector_index.py
and indexing/compressed_index.py.
"""

from __future__ import annotations

import faiss
import numpy as np

# Filtered searches on an HNSW index score up to this many allowed rows exactly (≈ 1 ms per 10k rows of 384-d).
BRUTE_FORCE_ALLOWED = 50_000


def search(index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) [B, k']; k' = min(k, index size); ids are row numbers in the bundle.

    ``allowed`` (row numbers) restricts the search itself (FAISS IDSelector), so the best allowed rows are found
    even when none of them is in the unrestricted top-k; missing slots are id -1.
    """
    k = max(1, min(k, index.ntotal))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None:
        return index.search(queries, k)
    rows = np.ascontiguousarray(np.asarray(allowed, dtype=np.int64))
    if len(rows) == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    k = min(k, len(rows))
    if isinstance(index, faiss.IndexHNSW):
        if len(rows) <= BRUTE_FORCE_ALLOWED:
            # A filtered HNSW walk misses allowed rows when they are few (the graph routes through excluded
            # nodes): score the allowed rows exactly instead; cheap at this size.
            scores = queries @ index.reconstruct_batch(rows).T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # stable: equal scores in row order
            return np.take_along_axis(scores, order, axis=1), rows[order]
        params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBatch(rows), efSearch=max(256, 4 * k))
    else:
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))  # exact: the selector is exact too
    return index.search(queries, k, params=params)


def search_compressed(index: faiss.Index, queries: np.ndarray, k: int, desc: dict | None = None, *,
           rerank: np.ndarray | None = None, rerank_k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) [B, k']; applies the recorded nprobe / efSearch of ``desc`` first (when given).

    ``rerank``: the original float vectors, row = id — typically ``np.load(path, mmap_mode="r")`` so they stay
    on disk, not in the index's memory. The compressed index then proposes ``rerank_k`` candidates and exact
    inner products order them: recall of the top k becomes the compressed index's recall at ``rerank_k``.
    """
    if desc:
        value = desc.get("nprobe", desc.get("ef_search"))
        if value is not None:
            set_search_parameter(index, value)
    k = max(1, min(k, index.ntotal))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if rerank is None:
        return index.search(q, k)
    _, cand = index.search(q, max(k, min(int(rerank_k), index.ntotal)))
    scores = np.full((len(q), k), -np.inf, np.float32)
    ids = np.full((len(q), k), -1, np.int64)
    for row, found in enumerate(cand):
        found = np.unique(found[found >= 0])  # sorted ids: sequential reads of a memory-mapped file
        exact = np.asarray(rerank[found], np.float32) @ q[row]
        top = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(top)] = exact[top]
        ids[row, : len(top)] = found[top]
    return scores, ids


def search_parameter(index: faiss.Index) -> str | None:
    """Name of the search-time knob of ``index``: ``nprobe`` (IVF), ``efSearch`` (HNSW) or None (exact)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    if _ivf(inner) is not None:
        return "nprobe"
    if isinstance(faiss.downcast_index(inner), faiss.IndexHNSW):
        return "efSearch"
    return None


def set_search_parameter(index: faiss.Index, value: int) -> None:
    name = search_parameter(index)
    if name == "nprobe":
        _ivf(index).nprobe = int(value)
    elif name == "efSearch":
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        faiss.downcast_index(inner).hnsw.efSearch = int(value)


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
