"""Building the descriptor-vote index: every reference descriptor (RootSIFT, matching space) in one IVF index.

A photo's descriptors vote for the artworks of their nearest reference descriptors (artlens.indexing.store.votes);
why, and what it costs and measures: docs/architecture.md "Descriptor votes", docs/benchmarks.md. Ids in the index
are positions in the bundle's flat descriptor array; ``features.offsets`` maps them to rows.
"""

from __future__ import annotations

import faiss
import numpy as np

from artlens.config import with_defaults
from artlens.verification import matching_space

DEFAULT_CONFIG: dict = {
    "nlist": None,  # inverted lists; None: 4·√(descriptors), within [16, 65536]
    "encoding": "SQ8",  # FAISS encoding of the vectors in the lists (SQ8: 1 byte per dimension)
    "train_per_list": 64,  # training sample per list (capped at all descriptors)
    "seed": 0,
}


def _matching(features) -> np.ndarray:
    return np.ascontiguousarray(matching_space(np.asarray(features.descriptors), features.method), np.float32)


def build_vote_index(features, config: dict | None = None) -> tuple[faiss.Index, dict]:
    """Train an IVF index on the references' descriptors and fill it; returns (index, description)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    data = _matching(features)
    n, dim = data.shape
    nlist = int(cfg["nlist"] or min(65536, max(16, round(4 * np.sqrt(max(n, 1))))))
    nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))  # FAISS k-means wants ≥ 39 points per list
    factory = f"IVF{nlist},{cfg['encoding']}"
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    sample = data
    if n > cfg["train_per_list"] * nlist:
        pick = np.random.default_rng(cfg["seed"]).choice(n, cfg["train_per_list"] * nlist, replace=False)
        sample = data[np.sort(pick)]
    index.train(sample)
    index.add(data)
    desc = {"factory": factory, "nlist": nlist, "count": int(index.ntotal), "dim": dim,
            "train_sample": len(sample), "seed": cfg["seed"]}
    return index, desc


def refill(index: faiss.Index, features) -> faiss.Index:
    """A copy of a trained vote index holding ``features``' descriptors (after rows were removed or added):
    the lists and the encoding stay as trained, only the stored vectors change."""
    fresh = faiss.clone_index(index)
    fresh.reset()
    if features.offsets[-1]:
        fresh.add(_matching(features))
    return fresh


def with_added(index: faiss.Index, features) -> faiss.Index:
    """A copy of a vote index with one more artwork's descriptors (``features``: its LocalFeatures) at the end,
    where the bundle's flat descriptor array puts them too."""
    grown = faiss.clone_index(index)
    if len(features.descriptors):
        grown.add(_matching(features))
    return grown
