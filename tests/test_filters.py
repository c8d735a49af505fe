"""Metadata filters restrict the FAISS search itself (IDSelector), for exact and HNSW indexes alike."""

from __future__ import annotations

import numpy as np
import pytest

from artlens.indexing.store.vectors import search
from artlens.indexing.vector_index import build_index


@pytest.mark.parametrize("exact_below", [10_000, 0])  # IndexFlatIP, IndexHNSWFlat
def test_search_returns_the_best_allowed_rows_even_outside_the_unfiltered_top_k(exact_below):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, _desc = build_index(vectors, {"exact_below": exact_below})
    query = vectors[:1]
    top = set(search(index, query, 5)[1][0].tolist())
    ranked = np.argsort(-(vectors @ query[0]))
    allowed = ranked[200:210]  # far outside the unfiltered top 5
    assert not top & set(allowed.tolist())
    _scores, ids = search(index, query, 5, allowed)
    assert set(ids[0].tolist()) <= set(allowed.tolist()) and len(ids[0]) == 5
    assert ids[0][0] == allowed[0]  # the best of the allowed rows comes first
    _empty_scores, empty_ids = search(index, query, 5, np.array([], dtype=np.int64))
    assert (empty_ids == -1).all()
