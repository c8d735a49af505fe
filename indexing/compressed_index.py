"""Building a FAISS index for many vectors in little memory (the segment vectors): exact below a size threshold,
compressed above it (default: uncentred PCA 384 → 88, IVF, 8-bit scalar quantisation; ``RECIPES``).

Same ``(index, description)`` return as indexing/vector_index.py. The search-time knob (``nprobe``) is tuned here
to a target recall and stored in the index; searching: artlens.indexing.store.vectors. Why: docs/index-benchmarks.md.
"""

from __future__ import annotations

import math
import time

import faiss
import numpy as np

from artlens.config import with_defaults
from artlens.indexing.store.vectors import search_parameter, set_search_parameter

DEFAULT_CONFIG: dict = {
    "exact_below": 50_000,  # as indexing/vector_index.py: flat search is < 10 ms per query up to here
    "recipe": "pca88-ivf-sq8",
    "nlist": None,  # None: 4·√n rounded to a power of two, 64 … 65536
    "train_size": None,  # None: 40 per list (k-means wants ≥ 39); more only costs build time
    "target_recall": 0.95,  # 10-recall@10 against exact search, on the tuning sample
    "tune_queries": 500,
    "nprobe_grid": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    "ef_search_grid": (16, 32, 64, 96, 128, 192, 256, 384, 512),
    "seed": 0,
}

# name → how to build it. ``proj``: uncentred-PCA output dims (None: none); ``codec``: FAISS factory codec;
# ``opq``: learn an OPQ rotation first (PQ codecs). Bytes per vector ≈ code bytes + 8 (IVF stores int64 ids).
RECIPES: dict[str, dict] = {
    "flat": {"kind": "flat"},
    "hnsw32-flat": {"kind": "hnsw", "m": 32},
    "pca88-ivf-sq8": {"kind": "ivf", "proj": 88, "codec": "SQ8"},
    "pca120-ivf-sq6": {"kind": "ivf", "proj": 120, "codec": "SQ6"},
    "pca176-ivf-sq4": {"kind": "ivf", "proj": 176, "codec": "SQ4"},
    # PQ: 8-bit sub-quantisers; "np" skips FAISS's polysemous training (minutes, useless without Hamming filtering)
    "pca176-ivf-pq88": {"kind": "ivf", "proj": 176, "codec": "PQ88np"},  # 2 dims per sub-quantiser
    "opq64-ivf-pq64": {"kind": "ivf", "proj": None, "codec": "PQ64np", "opq": 64},
    "ivf-pq64": {"kind": "ivf", "proj": None, "codec": "PQ64np"},
}


def build_compressed_index(vectors: np.ndarray, config: dict | None = None) -> tuple[faiss.Index, dict]:
    """Index L2-normalised float32 vectors for inner-product search; returns (index, description).

    Below ``exact_below`` vectors: exact ``IndexFlatIP``. Above: ``config["recipe"]`` (see :data:`RECIPES`),
    with its search parameter tuned to ``target_recall``; everything chosen is in the description.
    """
    cfg = with_defaults(DEFAULT_CONFIG, config)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {x.shape}")
    n, dim = x.shape
    recipe_name = "flat" if n < cfg["exact_below"] else cfg["recipe"]
    if recipe_name not in RECIPES:
        raise ValueError(f"unknown index recipe {recipe_name!r}; choose one of {', '.join(RECIPES)}")
    start = time.perf_counter()
    index, desc = make_index(recipe_name, dim, n, cfg)
    if not index.is_trained:
        rng = np.random.default_rng(cfg["seed"])
        size = int(cfg["train_size"] or max(40 * desc.get("nlist", 0), 20_000))
        sample = x[np.sort(rng.choice(n, size=min(n, size), replace=False))]
        _train(index, sample, desc)
    if desc["exact"]:
        _add(index, x, np.arange(n))
    else:
        # Tune on vectors the index does not hold yet (indexed vectors as queries find themselves and, in a
        # graph, the neighbours they were linked to at insertion: optimistic), then add them.
        rng = np.random.default_rng(cfg["seed"] + 1)
        count = min(int(cfg["tune_queries"]), n // 10)
        if recipe_name.startswith("hnsw"):  # HNSW ids are insertion order: hold out the last rows
            held = np.arange(n - count, n)
        else:  # IVF takes explicit ids: a random sample, ids stay row numbers
            held = np.sort(rng.choice(n, size=count, replace=False))
        keep = np.ones(n, bool)
        keep[held] = False
        rows = np.flatnonzero(keep)
        _add(index, x, rows)
        desc["build_s"] = round(time.perf_counter() - start, 2)
        desc.update(tune_search(index, x, desc, cfg, query_rows=held, indexed_rows=rows))
        _add(index, x, held)
    desc.setdefault("build_s", round(time.perf_counter() - start, 2))
    desc["exact_below"] = cfg["exact_below"]
    desc["count"] = int(index.ntotal)
    return index, desc


def _add(index: faiss.Index, x: np.ndarray, rows: np.ndarray) -> None:
    """Add ``x[rows]`` with ids = row numbers, in chunks (transforms copy their input)."""
    sequential = bool(len(rows)) and rows[0] == index.ntotal and rows[-1] - rows[0] == len(rows) - 1
    for lo in range(0, len(rows), 131_072):
        part = rows[lo:lo + 131_072]
        if sequential:
            index.add(x[part])
        else:
            index.add_with_ids(x[part], part.astype(np.int64))


def make_index(recipe_name: str, dim: int, n: int, cfg: dict | None = None) -> tuple[faiss.Index, dict]:
    """An empty (untrained) index of ``recipe_name`` sized for ``n`` vectors, and its description."""
    cfg = with_defaults(DEFAULT_CONFIG, cfg)
    recipe = RECIPES[recipe_name]
    desc: dict = {"recipe": recipe_name, "metric": "inner_product", "dim": dim, "exact": recipe["kind"] == "flat"}
    if recipe["kind"] == "flat":
        return faiss.IndexFlatIP(dim), {**desc, "type": "IndexFlatIP"}
    if recipe["kind"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, recipe["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        return index, {**desc, "type": "IndexHNSWFlat", "m": recipe["m"], "ef_construction": 200}
    nlist = int(cfg["nlist"] or default_nlist(n))
    proj = min(recipe["proj"], dim) if recipe.get("proj") else None
    inner_dim = proj or dim
    factory = f"IVF{nlist},{recipe['codec']}"
    if recipe.get("opq"):
        factory = f"OPQ{recipe['opq']},{factory}"
    inner = faiss.index_factory(inner_dim, factory, faiss.METRIC_INNER_PRODUCT)
    desc.update({"type": "IndexIVF", "factory": factory, "nlist": nlist, "codec": recipe["codec"],
                 "projection": f"uncentred PCA {dim}→{proj}" if proj else None})
    if not proj:
        return inner, desc
    transform = faiss.LinearTransform(dim, proj, False)  # A set from the data in _train
    index = faiss.IndexPreTransform(transform, inner)
    index.referenced_objects = [transform, inner]  # keep the Python handles alive with the index
    return index, desc


def default_nlist(n: int) -> int:
    """4·√n rounded to a power of two, clipped to [16, 65536] (FAISS's guideline: 4–16·√n lists), and at most
    n / 39 so k-means has the 39 training points per list it asks for."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return int(min(65_536, max(16, nlist)))


def _train(index: faiss.Index, sample: np.ndarray, desc: dict) -> None:
    if isinstance(index, faiss.IndexPreTransform):
        transform = faiss.downcast_VectorTransform(index.chain.at(0))
        a, kept = uncentred_pca(sample, transform.d_out)
        faiss.copy_array_to_vector(a.ravel(), transform.A)
        transform.is_trained = True
        desc["projection_energy_kept"] = round(kept, 4)
    index.train(sample)
    desc["train_size"] = len(sample)


def uncentred_pca(x: np.ndarray, d_out: int) -> tuple[np.ndarray, float]:
    """Rows: the top ``d_out`` eigenvectors of E[x xᵀ] (float32 [d_out, d]); and the share of E‖x‖² kept."""
    moment = (x.astype(np.float64).T @ x.astype(np.float64)) / len(x)
    values, vecs = np.linalg.eigh(moment)
    order = np.argsort(values, kind="stable")[::-1][:d_out]
    return np.ascontiguousarray(vecs[:, order].T, dtype=np.float32), float(values[order].sum() / values.sum())


def tune_search(index: faiss.Index, vectors: np.ndarray, desc: dict, config: dict | None = None, *,
                query_rows: np.ndarray, indexed_rows: np.ndarray) -> dict:
    """Smallest nprobe / efSearch whose 10-recall@10 ≥ target, for ``vectors[query_rows]`` as queries against
    the index holding ``vectors[indexed_rows]`` (ids = row numbers).

    Leaves the index set to it and returns what to record. When no value reaches the target, the best one
    is kept and ``target_met`` is False.
    """
    cfg = with_defaults(DEFAULT_CONFIG, config)
    name = search_parameter(index)
    if name is None or not len(query_rows):
        return {}
    grid = cfg["nprobe_grid"] if name == "nprobe" else cfg["ef_search_grid"]
    if name == "nprobe":
        grid = [v for v in grid if v <= desc.get("nlist", 1 << 30)]
    k = 10
    queries = np.ascontiguousarray(vectors[query_rows])
    _, local = faiss.knn(queries, np.ascontiguousarray(vectors[indexed_rows]), k, metric=faiss.METRIC_INNER_PRODUCT)
    truth = indexed_rows[local]
    start = time.perf_counter()
    best = (-1.0, grid[-1])
    for value in grid:
        set_search_parameter(index, value)
        _, ids = index.search(queries, k)
        recall = recall_at(truth, ids)["10-recall@10"]
        if recall > best[0]:
            best = (recall, value)
        if recall >= cfg["target_recall"]:
            break
    set_search_parameter(index, best[1])
    key = "nprobe" if name == "nprobe" else "ef_search"
    return {key: int(best[1]), "tuned_on": f"{len(query_rows)} vectors held out of the index until tuned",
            "tuned_recall_10at10": round(best[0], 4), "target_recall_10at10": cfg["target_recall"],
            "target_met": bool(best[0] >= cfg["target_recall"]), "tune_s": round(time.perf_counter() - start, 2)}


def recall_at(truth: np.ndarray, found: np.ndarray) -> dict:
    """10-recall@10 (share of the exact top-k found in the approximate top-k) and 1-recall@k (exact nearest
    neighbour in the approximate top-k), with k = truth's width."""
    k = truth.shape[1]
    overlap = [len(set(t.tolist()) & set(f[:k].tolist())) for t, f in zip(truth, found, strict=True)]
    first = [t[0] in set(f[:k].tolist()) for t, f in zip(truth, found, strict=True)]
    return {f"{k}-recall@{k}": float(np.mean(overlap)) / k, f"1-recall@{k}": float(np.mean(first))}
