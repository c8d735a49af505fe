"""Building the FAISS index over global descriptors: exact below a size threshold, HNSW above it; the choice is
recorded. Searching it: artlens.indexing.store.vectors."""

from __future__ import annotations

import faiss
import numpy as np

from artlens.config import with_defaults

DEFAULT_CONFIG: dict = {
    "exact_below": 50_000,  # flat inner-product search stays < 10 ms per query up to here on 2 cores
    "hnsw_m": 32,
    "hnsw_ef_construction": 200,
    "hnsw_ef_search": 128,
}



def build_index(vectors: np.ndarray, config: dict | None = None) -> tuple[faiss.Index, dict]:
    """Index L2-normalised float32 vectors for inner-product search; returns (index, description)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
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
