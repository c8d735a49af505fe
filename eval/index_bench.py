"""`artlens bench index`: FAISS exact vs compressed indexes at 10K / 100K / 1M vectors, side by side in one run.

Per size and recipe (indexing/compressed_index.py RECIPES): build time, search latency, 10-recall@10 and
1-recall@10 against exact search, bytes per vector. Beyond the real stand-in vectors, larger indexes add noisy
copies shaped like the base set's covariance, and ``random-unit`` vectors are the pessimistic check; how and why:
docs/index-benchmarks.md.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import faiss
import numpy as np

from artlens.errors import ArtlensError
from artlens.indexing.compressed_index import RECIPES, build_compressed_index, recall_at
from artlens.indexing.store.vectors import search_compressed

SIZES = (10_000, 100_000, 1_000_000)
RECIPES_BY_DEFAULT = ("flat", "hnsw32-flat", "pca88-ivf-sq8", "pca120-ivf-sq6", "pca176-ivf-pq88", "ivf-pq64")
PER_IMAGE = 40  # segments kept per artwork: dev_segment_vectors' default, ~ the mask generator's cap (48)
HNSW_MAX = 100_000  # HNSW over 1M float vectors takes longer to build than the rest together on 2 cores
PROJECTION_N = 25_000_000
RERANK_K = 100  # candidates re-ordered with exact vectors from disk
Progress = Callable[[str], None]


def bench_index(base: np.ndarray | None, *, owners: np.ndarray | None = None, sizes: tuple[int, ...] = SIZES,
                recipes: tuple[str, ...] = RECIPES_BY_DEFAULT, queries: int = 1000, batch1_queries: int = 200,
                random_check_max: int = 100_000, base_desc: dict | None = None, seed: int = 0,
                progress: Progress | None = None, workdir: str | Path | None = None,
                on_run: Callable[[dict], None] | None = None) -> dict:
    """Run the benchmark; ``base`` None uses a synthetic structured set (for --quick and tests). ``owners``:
    the image of each base vector (see :func:`split_queries`)."""
    from artlens.eval.bench import describe_machine

    say = progress or (lambda msg: None)
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"unknown index recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    rng = np.random.default_rng(seed)
    if base is None:
        base = synthetic_base(rng, 20_000, 384)
        base_desc = {"how_made": "synthetic: Gaussian with a decaying spectrum around a shared mean, normalised "
                                 "(no real vectors given)"}
    base = _normalise(np.asarray(base, np.float32))
    dim = base.shape[1]
    held, rest = split_queries(base, owners, queries, rng)
    base_stats = describe_vectors(rest, rng)
    noise = NoiseModel(rest, target=base_stats["nn_distance"]["p50"], rng=rng)
    report: dict = {"machine": describe_machine(), "faiss": faiss.__version__,
                    "threads": faiss.omp_get_max_threads(), "batch1_threads": 1,
                    "dim": dim, "queries": len(held), "k": 10,
                    "vectors": {**(base_desc or {}), "base_count": len(rest), "base_stats": base_stats,
                                "queries_from": (f"other vectors of the same images ({PER_IMAGE} per image indexed)"
                                                 if owners is not None else "random hold-out"),
                                "replication": noise.describe()},
                    "runs": []}
    work = Path(workdir or tempfile.gettempdir())
    datasets = [("segments", lambda n: noise.database(n), held)]
    if random_check_max:
        unit = synthetic_random(np.random.default_rng(seed + 7), len(held), dim)
        datasets.append(("random-unit", lambda n: synthetic_random(np.random.default_rng(seed + 8), n, dim), unit))
    for name, make_db, qs in datasets:
        for n in sizes:
            if name == "random-unit" and n > random_check_max:
                continue
            say(f"{name} {n:,}: making vectors")
            db = make_db(n)
            stats = describe_vectors(db, rng, queries=qs)
            _, truth = faiss.knn(qs, db, 10, metric=faiss.METRIC_INNER_PRODUCT)
            for recipe in recipes:
                if recipe.startswith("hnsw") and n > HNSW_MAX:
                    continue
                say(f"{name} {n:,}: {recipe}")
                run = _bench_one(recipe, db, qs, truth, batch1_queries, work)
                say(f"  → 10-recall@10 {run['10-recall@10']:.3f}, 1-recall@10 {run['1-recall@10']:.3f}, "
                    f"{run['bytes_per_vector']:.1f} B/vector, p50 {run['latency_ms']['batch1_p50']:.2f} ms, "
                    f"{run['index'].get('nprobe', run['index'].get('ef_search', 'exact'))}"
                    + (f"; + rerank {run['rerank']['10-recall@10']:.3f} / {run['rerank']['1-recall@10']:.3f}, "
                       f"p50 {run['rerank']['latency_ms']['batch1_p50']:.2f} ms" if run["rerank"] else ""))
                report["runs"].append({"dataset": name, "n": n, "recipe": recipe, "db_stats": stats, **run})
                if on_run:
                    on_run(report)  # partial results survive an interrupted long run
            del db
    report["chosen"] = _summarise(report["runs"])
    return report


def _bench_one(recipe: str, db: np.ndarray, queries: np.ndarray, truth: np.ndarray, batch1: int,
               work: Path) -> dict:
    n = len(db)
    start = time.perf_counter()
    index, desc = build_compressed_index(db, {"recipe": recipe, "exact_below": 0 if recipe != "flat" else 1})
    build_s = time.perf_counter() - start
    index.search(queries[:5], 10)  # warm-up
    lat = _one_thread_latencies(partial(index.search, k=10), queries[:batch1])
    t = time.perf_counter()
    _, found = index.search(queries, 10)
    batched_ms = (time.perf_counter() - t) * 1000 / len(queries)
    rerank = _bench_rerank(index, db, queries, truth, batch1, work) if not desc["exact"] else None
    size = _serialised_bytes(index, work)
    fixed = 0
    if not desc["exact"] and hasattr(index, "reset"):
        index.reset()  # what stays without vectors: quantizer, transform, codebooks
        fixed = _serialised_bytes(index, work)
    per_vector = (size - fixed) / n
    del index
    return {
        "index": desc, "build_s": round(build_s, 2),
        "latency_ms": {"batch1_p50": round(float(np.median(lat)) * 1000, 3),
                       "batch1_p95": round(float(np.percentile(lat, 95)) * 1000, 3),
                       "batched_per_query": round(batched_ms, 4)},
        **{k: round(v, 4) for k, v in recall_at(truth, found).items()},
        "bytes_per_vector": round(size / n, 2),
        "bytes_per_vector_marginal": round(per_vector, 2),
        "fixed_bytes": int(fixed),
        "projected_gb_25m": round((fixed + per_vector * PROJECTION_N) / 1e9, 3),
        "rerank": rerank,
    }


def _bench_rerank(index: faiss.Index, db: np.ndarray, queries: np.ndarray, truth: np.ndarray, batch1: int,
                  work: Path, rerank_k: int = RERANK_K) -> dict:
    """The same index proposing ``rerank_k`` candidates, re-ordered by exact inner products read from the float
    vectors memory-mapped from disk (.npy): RAM stays the index's; disk holds 4·dim bytes per vector."""
    fd, path = tempfile.mkstemp(suffix=".npy", dir=work)
    os.close(fd)
    try:
        np.save(path, db)
        vectors = np.load(path, mmap_mode="r")
        lat = _one_thread_latencies(partial(search_compressed, index, k=10, rerank=vectors, rerank_k=rerank_k),
                                    queries[:batch1])
        t = time.perf_counter()
        _, found = search_compressed(index, queries, 10, rerank=vectors, rerank_k=rerank_k)
        batched_ms = (time.perf_counter() - t) * 1000 / len(queries)
        del vectors
    finally:
        os.unlink(path)
    return {"rerank_k": rerank_k, "disk_bytes_per_vector": 4 * db.shape[1],
            "latency_ms": {"batch1_p50": round(float(np.median(lat)) * 1000, 3),
                           "batched_per_query": round(batched_ms, 4)},
            **{k: round(v, 4) for k, v in recall_at(truth, found).items()}}


def _one_thread_latencies(search_one: Callable[[np.ndarray], object], queries: np.ndarray) -> list[float]:
    """Seconds per single-query search, on one thread: a service answers concurrent photos on separate cores, and
    OpenMP's worker threads only add wake-up latency to a single small query (badly so on a shared machine)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    lat = []
    try:
        for q in queries:
            t = time.perf_counter()
            search_one(q[None])
            lat.append(time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(threads)
    return lat


def _serialised_bytes(index: faiss.Index, work: Path) -> int:
    fd, path = tempfile.mkstemp(suffix=".faiss", dir=work)
    os.close(fd)
    try:
        faiss.write_index(index, path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def _summarise(runs: list[dict]) -> dict:
    """Per dataset and size: the smallest in-memory index (bytes/vector ≤ 100) reaching 10-recall@10 ≥ 0.95 —
    alone, or with the exact re-rank from disk — if any."""
    out: dict = {}
    for run in runs:
        key = f"{run['dataset']}@{run['n']}"
        out.setdefault(key, None)
        variants = [(run["recipe"], run)]
        if run.get("rerank"):
            variants.append((f"{run['recipe']} + re-rank top {run['rerank']['rerank_k']} from disk", run["rerank"]))
        for name, res in variants:
            best = out[key]
            if res["10-recall@10"] >= 0.95 and run["bytes_per_vector"] <= 100 and (
                    best is None or run["bytes_per_vector"] < best["bytes_per_vector"]):
                out[key] = {"recipe": name, "bytes_per_vector": run["bytes_per_vector"],
                            "10-recall@10": res["10-recall@10"], "1-recall@10": res["1-recall@10"],
                            "projected_gb_25m": run["projected_gb_25m"]}
    return out


# -- vectors -------------------------------------------------------------------------------------------------
def split_queries(base: np.ndarray, owners: np.ndarray | None, queries: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(queries, real database vectors). With ``owners`` (image per vector): ``PER_IMAGE`` vectors per image
    form the database and the queries are other vectors of the same images (a new view of a known artwork's
    region); without: a random hold-out."""
    if owners is None:
        order = rng.permutation(len(base))
        return base[order[:queries]], base[order[queries:]]
    keep, spare = [], []
    for image in np.unique(owners):
        ids = rng.permutation(np.flatnonzero(owners == image))
        keep.append(ids[:PER_IMAGE])
        spare.append(ids[PER_IMAGE:])
    spare_ids = np.concatenate(spare)
    picked = rng.choice(spare_ids, size=min(queries, len(spare_ids)), replace=False)
    return base[picked], base[np.sort(np.concatenate(keep))]


class NoiseModel:
    """Noisy copies of real vectors: b + α·Σ^½·z, normalised; α set so median ‖copy − b‖ = ``target``."""

    def __init__(self, base: np.ndarray, *, target: float, rng: np.random.Generator) -> None:
        self.base = base
        self.rng = rng
        cov = np.cov(base.astype(np.float64), rowvar=False)
        values, vecs = np.linalg.eigh(cov)
        self.root = (vecs * np.sqrt(np.clip(values, 0, None))).astype(np.float32)  # Σ^½ as V·√Λ
        self.target = float(target)
        self.alpha = 1.0
        for _ in range(3):  # the normalisation shrinks long offsets a little; converge on the median
            probe = self._copies(base[rng.integers(0, len(base), 2000)])
            med = float(np.median(np.linalg.norm(probe[0] - probe[1], axis=1)))
            self.alpha *= self.target / max(med, 1e-9)

    def _copies(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = self.rng.standard_normal((len(origins), self.root.shape[1]), dtype=np.float32)
        return _normalise(origins + self.alpha * z @ self.root.T), origins

    def database(self, n: int) -> np.ndarray:
        if n <= len(self.base):
            return np.ascontiguousarray(self.base[np.sort(self.rng.choice(len(self.base), n, replace=False))])
        out = np.empty((n, self.base.shape[1]), np.float32)
        out[: len(self.base)] = self.base
        for lo in range(len(self.base), n, 100_000):
            hi = min(n, lo + 100_000)
            out[lo:hi] = self._copies(self.base[self.rng.integers(0, len(self.base), hi - lo)])[0]
        return out

    def describe(self) -> dict:
        return {"method": "copy = normalise(b + α·Σ^½·z), b a random real vector, Σ the real set's covariance, "
                          "z ~ N(0, I); α sets the median ‖copy − b‖ to the real set's median NN distance",
                "target_median_distance": round(self.target, 4), "alpha": round(self.alpha, 4)}


def synthetic_base(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    spectrum = 1.0 / np.arange(1, dim + 1) ** 0.9
    x = rng.standard_normal((n, dim)).astype(np.float32) * np.sqrt(spectrum).astype(np.float32)
    return _normalise(x + 0.6 * _normalise(rng.standard_normal((1, dim)).astype(np.float32)))


def synthetic_random(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = _normalise(rng.standard_normal((hi - lo, dim), dtype=np.float32))
    return out


def describe_vectors(x: np.ndarray, rng: np.random.Generator, *, sample: int = 1000,
                     queries: np.ndarray | None = None) -> dict:
    """Mean pairwise cosine (sample) and nearest-neighbour distance percentiles (sample vs all, self excluded);
    with ``queries``: their NN distance into ``x`` too."""
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    s = x[idx].astype(np.float64)
    g = s @ s.T
    mean_cos = float((g.sum() - np.trace(g)) / (len(s) * (len(s) - 1)))
    sims, ids = faiss.knn(np.ascontiguousarray(x[idx]), x, 2, metric=faiss.METRIC_INNER_PRODUCT)
    nn_sim = np.where(ids[:, 0] == idx, sims[:, 1], sims[:, 0])
    out = {"count": len(x), "mean_pairwise_cosine": round(mean_cos, 4), "nn_distance": _dist_pct(nn_sim)}
    if queries is not None:
        qs, _ = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        out["query_nn_distance"] = _dist_pct(qs[:, 0])
        out["query_gap_1_to_10"] = round(float(np.median(qs[:, 0] - qs[:, 9])), 5)  # how crowded the top-10
    return out


def _dist_pct(sim: np.ndarray) -> dict:
    d = np.sqrt(np.clip(2.0 - 2.0 * sim, 0, None))
    return {p: round(float(np.percentile(d, int(p[1:]))), 4) for p in ("p5", "p25", "p50", "p75", "p95")}


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def markdown_table(report: dict) -> str:
    lines = ["| vectors | n | index | bytes/vec | 25M GB | 10-recall@10 | 1-recall@10 | search param | "
             "p50 ms (batch 1, 1 thread) | ms/query (batched) | build s |",
             "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in report["runs"]:
        d = r["index"]
        param = f"nprobe {d['nprobe']}" if "nprobe" in d else (f"efSearch {d['ef_search']}" if "ef_search" in d
                                                                 else "exact")
        lines.append(f"| {r['dataset']} | {r['n']:,} | {r['recipe']} | {r['bytes_per_vector']:.1f} | "
                     f"{r['projected_gb_25m']:.2f} | {r['10-recall@10']:.3f} | {r['1-recall@10']:.3f} | {param} | "
                     f"{r['latency_ms']['batch1_p50']:.2f} | {r['latency_ms']['batched_per_query']:.3f} | "
                     f"{r['build_s']:.1f} |")
        if r.get("rerank"):
            rr = r["rerank"]
            lines.append(f"| {r['dataset']} | {r['n']:,} | {r['recipe']} + exact re-rank of top {rr['rerank_k']} "
                         f"(vectors on disk) | {r['bytes_per_vector']:.1f} | {r['projected_gb_25m']:.2f} | "
                         f"{rr['10-recall@10']:.3f} | {rr['1-recall@10']:.3f} | {param} | "
                         f"{rr['latency_ms']['batch1_p50']:.2f} | {rr['latency_ms']['batched_per_query']:.3f} | – |")
    return "\n".join(lines)


def load_vectors(path: Path, queries: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(vectors, owning image per vector or None, description) of a .npy file of real vectors; the owners and
    the description are read from ``<stem>-owners.npy`` and ``<stem>.json`` beside it when they exist."""
    if not path.is_file():
        raise ArtlensError(f"--vectors {path}: file not found")
    try:
        base = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtlensError(f"--vectors {path}: not a NumPy .npy array ({exc})") from None
    if base.ndim != 2 or len(base) <= queries:
        raise ArtlensError(f"--vectors {path}: need a 2-D array with more than {queries} rows, got shape {base.shape}")
    owners_path = path.with_name(path.stem + "-owners.npy")
    owners = np.load(owners_path) if owners_path.is_file() else None
    side = path.with_suffix(".json")
    desc = json.loads(side.read_text()) if side.is_file() else {"file": str(path)}
    desc["file"] = str(path)
    return base, owners, desc


def bench_index_to_file(json_out: Path, *, vectors: Path | None, sizes: tuple[int, ...], recipes: tuple[str, ...],
                        queries: int, random_check_max: int, quick: bool, markdown: Path | None = None,
                        progress: Progress | None = None) -> dict:
    """`artlens bench index`: :func:`bench_index` on ``vectors`` (None: synthetic), its report kept at ``json_out``
    (marked ``"partial": true`` after each run until the last) and its table at ``markdown``."""
    json_out.parent.mkdir(parents=True, exist_ok=True)

    def keep_partial(report: dict) -> None:
        json_out.write_text(json.dumps({**report, "partial": True}, indent=2))

    base, owners, desc = load_vectors(vectors, queries) if vectors is not None else (None, None, None)
    try:
        report = bench_index(base, owners=owners, sizes=sizes, recipes=recipes, queries=queries,
                             random_check_max=random_check_max, base_desc=desc,
                             batch1_queries=50 if quick else 200, on_run=keep_partial, progress=progress)
    except ValueError as exc:
        raise ArtlensError(str(exc)) from None
    json_out.write_text(json.dumps(report, indent=2))
    if markdown:
        markdown.write_text(markdown_table(report) + "\n")
    return report
