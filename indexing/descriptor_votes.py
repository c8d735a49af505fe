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
    # FAISS encoding of the vectors in the lists. "auto": SQ8 (1 byte per dimension, 136 B per descriptor with its
    # 8-byte id) up to ``compress_above`` descriptors, PQ32x8 (32 B + id) above: at a few thousand artworks SQ8's
    # RAM is small and its vote margins are the best measured; at 10⁵ artworks it would be 12 GB (docs/scale.md).
    "encoding": "auto",
    "compress_above": 2_000_000,  # descriptors (≈ 2 000 artworks of 1 000 RootSIFT keypoints)
    "compressed_encoding": "PQ32x8",
    # Coarse quantizer: "auto" is exact ("flat") up to ``hnsw_above`` lists, an HNSW graph over the centroids
    # above — assigning 10⁸ descriptors to 4·10⁴ centroids exactly takes hours on a few cores.
    "quantizer": "auto",
    "hnsw_above": 8192,
    "train_per_list": 64,  # training sample per list (capped at all descriptors)
    "add_chunk": 1_000_000,  # descriptors converted to float and added at a time (bounds the build's memory)
    "seed": 0,
}


def _factory(nlist: int, count: int, cfg: dict) -> str:
    encoding = cfg["encoding"]
    if encoding == "auto":
        encoding = cfg["compressed_encoding"] if count > cfg["compress_above"] else "SQ8"
    quantizer = cfg["quantizer"]
    if quantizer == "auto":
        quantizer = "hnsw" if nlist > cfg["hnsw_above"] else "flat"
    if quantizer not in ("flat", "hnsw"):
        raise ValueError(f"votes quantizer must be auto, flat or hnsw, not {quantizer!r}")
    return f"IVF{nlist}{'_HNSW32' if quantizer == 'hnsw' else ''},{encoding}"


def _matching(features, start: int = 0, stop: int | None = None) -> np.ndarray:
    return np.ascontiguousarray(matching_space(np.asarray(features.descriptors[start:stop]), features.method),
                                np.float32)


def _sample(features, count: int, seed: int) -> np.ndarray:
    """``count`` descriptors drawn without replacement (seeded, in index order), in matching space; all of them
    when there are no more."""
    n = len(features.descriptors)
    if count >= n:
        return _matching(features)
    pick = np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
    return np.ascontiguousarray(matching_space(np.asarray(features.descriptors)[pick], features.method), np.float32)


def _add_all(index: faiss.Index, features, chunk: int) -> None:
    """Every descriptor of ``features`` into ``index``, ``chunk`` at a time: the float copy of 10⁸ descriptors
    would not fit in memory."""
    total = len(features.descriptors)
    for start in range(0, total, max(1, chunk)):
        index.add(_matching(features, start, start + chunk))


def build_vote_index(features, config: dict | None = None) -> tuple[faiss.Index, dict]:
    """Train an IVF index on the references' descriptors and fill it; returns (index, description)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    n, dim = len(features.descriptors), int(features.descriptors.shape[1])
    nlist = int(cfg["nlist"] or min(65536, max(16, round(4 * np.sqrt(max(n, 1))))))
    nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))  # FAISS k-means wants ≥ 39 points per list
    factory = _factory(nlist, n, cfg)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    sample = _sample(features, cfg["train_per_list"] * nlist, cfg["seed"])
    index.train(sample)
    _add_all(index, features, int(cfg["add_chunk"]))
    desc = {"factory": factory, "nlist": nlist, "count": int(index.ntotal), "dim": dim,
            "train_sample": len(sample), "seed": cfg["seed"]}
    return index, desc


def with_encoding(index: faiss.Index, features, encoding: str = "SQ8") -> tuple[faiss.Index, dict]:
    """A vote index with the inverted lists (trained coarse quantizer) of ``index`` and another encoding, filled
    with ``features``: the same votes but for the codes, to measure what a compressed encoding costs without
    training the lists again (hours at 10⁸ descriptors)."""
    if encoding != "SQ8":
        raise ValueError(f"with_encoding supports SQ8, not {encoding!r}")
    ivf = faiss.extract_index_ivf(index)
    quantizer = faiss.clone_index(ivf.quantizer)  # already of its own type: a downcast would not own it
    hnsw = "_HNSW32" if isinstance(quantizer, faiss.IndexHNSW) else ""
    # FAISS's Python layer keeps ``quantizer`` alive as long as the index that uses it.
    fresh = faiss.IndexIVFScalarQuantizer(quantizer, ivf.d, ivf.nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    fresh.train(_sample(features, 1_000_000, 0))  # the scalar ranges only: the quantizer is trained
    _add_all(fresh, features, DEFAULT_CONFIG["add_chunk"])
    return fresh, {"factory": f"IVF{ivf.nlist}{hnsw},{encoding}", "nlist": int(ivf.nlist), "count": int(fresh.ntotal)}


def refill(index: faiss.Index, features) -> faiss.Index:
    """A copy of a trained vote index holding ``features``' descriptors (after rows were removed or added):
    the lists and the encoding stay as trained, only the stored vectors change."""
    fresh = faiss.clone_index(index)
    fresh.reset()
    if features.offsets[-1]:
        _add_all(fresh, features, DEFAULT_CONFIG["add_chunk"])
    return fresh


def with_added(index: faiss.Index, features) -> faiss.Index:
    """A copy of a vote index with more artworks' descriptors at the end, where the bundle's flat descriptor array
    puts them too (``features``: one artwork's LocalFeatures, or several artworks' ReferenceFeatures)."""
    grown = faiss.clone_index(index)
    if len(features.descriptors):
        grown.add(_matching(features))
    return grown
