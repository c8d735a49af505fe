"""FAISS index over global descriptors: exact below a size threshold, HNSW above it; the choice is recorded."""

from __future__ import annotations

import faiss
import numpy as np

DEFAULT_CONFIG: dict = {
    "exact_below": 50_000,  # flat inner-product search stays < 10 ms per query up to here on 2 cores
    "hnsw_m": 32,
    "hnsw_ef_construction": 200,
    "hnsw_ef_search": 128,
}


# Filtered searches on an HNSW index score up to this many allowed rows exactly (≈ 1 ms per 10k rows of 384-d).
BRUTE_FORCE_ALLOWED = 50_000


def build_index(vectors: np.ndarray, config: dict | None = None) -> tuple[faiss.Index, dict]:
    """Index L2-normalised float32 vectors for inner-product search; returns (index, description)."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    n, dim = vectors.shape
    if n < cfg["exact_below"]:
        index = faiss.IndexFlatIP(dim)
        desc = {"type": "IndexFlatIP", "exact": True, "metric": "inner_product", "dim": dim}
    else:
        # HNSW needs no training and accepts incremental adds (new artworks), unlike IVF/PQ.
        index = faiss.IndexHNSWFlat(dim, cfg["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg["hnsw_ef_construction"]
        index.hnsw.efSearch = cfg["hnsw_ef_search"]
        desc = {"type": "IndexHNSWFlat", "exact": False, "metric": "inner_product", "dim": dim,
                "m": cfg["hnsw_m"], "ef_construction": cfg["hnsw_ef_construction"],
                "ef_search": cfg["hnsw_ef_search"]}
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    desc["exact_below"] = cfg["exact_below"]
    desc["count"] = int(index.ntotal)
    return index, desc


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
