"""Measures of `artlens bench segments`: recall at a false-positive rate, segment index quality against exact
search, and crop vs pooled segment vectors as a shortlist (docs/segments-benchmark.md)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from artlens.embedder import Embedder
from artlens.imaging import load_image
from artlens.indexing import amg, segment_vectors
from artlens.indexing.collection import load_collection_image
from artlens.indexing.store.rle import decode_rle

from .segments_bench_cost import Progress


def operating_point(report: dict, target_fpr: float) -> dict:
    """Recall at the lowest confidence threshold whose false-positive rate is ≤ ``target_fpr``, from the
    per-query top-ranked answers of an eval report. The threshold is chosen on these very queries (an oracle,
    applied alike to every system compared), so it is a fair comparison, not a deployable setting."""
    match = [d for d in report["details"] if "error" not in d and d["expected"]]
    nomatch = [d for d in report["details"] if "error" not in d and not d["expected"]]
    neg = np.sort(np.array([d["top_confidence"] for d in nomatch if d["top_ranked"]], float))[::-1]
    allowed = int(np.floor(target_fpr * len(nomatch) + 1e-9))
    # Accept a confidence strictly above the (allowed+1)-th best no-match confidence.
    floor = neg[allowed] if len(neg) > allowed else -np.inf
    hits = sum(1 for d in match if d["top_ranked"] in d["expected"] and d["top_confidence"] > floor)
    fps = int(np.sum(neg > floor))
    return {"threshold_above": float(floor) if np.isfinite(floor) else None,
            "recall": round(hits / len(match), 4) if match else float("nan"),
            "false_positive_rate": round(fps / len(nomatch), 4) if nomatch else float("nan")}


def segment_index_quality(index, vectors: np.ndarray, *, queries: np.ndarray | None = None, k: int = 10,
                          n_queries: int = 1000, seed: int = 0) -> dict:
    """Bytes per vector and recall@k of ``index`` against exact inner-product search over ``vectors``.

    ``index`` is any FAISS index holding ``vectors`` in order (exact, HNSW, PQ/OPQ, SQ …). Without ``queries``,
    a sample of the vectors themselves with a little noise is the query set (a segment searched for its
    neighbours, as segment search does). Bytes are the serialised index over its size: codes plus whatever
    structure it carries (graph links, codebooks), not the raw float32 vectors kept beside it.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, np.float32)
    n = len(vectors)
    if n == 0 or index.ntotal != n:
        raise ValueError(f"index holds {index.ntotal} vectors, {n} given")
    rng = np.random.default_rng(seed)
    if queries is None:
        picks = rng.choice(n, size=min(n_queries, n), replace=False)
        queries = vectors[picks] + rng.normal(0, 0.02, size=(len(picks), vectors.shape[1])).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries = np.ascontiguousarray(queries, np.float32)
    kk = min(k, n)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, kk)
    _, got = index.search(queries, kk)
    hits = sum(len(set(t.tolist()) & set(g.tolist())) for t, g in zip(truth, got, strict=True))
    nbytes = len(faiss.serialize_index(index))
    try:  # the per-vector code alone (codebooks and graph links excluded); not every index type reports it
        code = int(index.sa_code_size())
    except RuntimeError:
        code = None
    return {"type": type(index).__name__, "vectors": n, "dim": int(vectors.shape[1]),
            "bytes_per_vector": round(nbytes / n, 2), "code_bytes_per_vector": code,
            "float32_bytes_per_vector": 4 * int(vectors.shape[1]),
            f"recall_at_{k}": round(hits / (len(queries) * kk), 4), "queries": len(queries)}


def segment_vector_modes(bundle_path: Path, embedder: Embedder, queries: Path, cfg: dict,
                         progress: Progress) -> dict:
    """Crop vs pooled vectors of the *same* masks (the bundle's), as a DINOv2 shortlist for detail photos.

    Pooled vectors are the bundle's own; crop vectors are computed here from the stored masks (RLE) and the
    reference decoded as the build decodes it. Each detail photo's DINOv2 vector searches each set exactly; an
    artwork ranks by its best segment. Whole-image vectors are the third row for comparison."""
    import faiss

    from artlens.calibration.queries import labelled_photos
    from artlens.indexing.store.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    store = bundle.segments
    csv_path = Path(bundle.meta["collection"]["csv"])
    crop = np.zeros_like(np.asarray(store.vectors))
    fill = segment_vectors.neutral_fill(embedder)
    n_art = len(bundle.artworks)
    t_crop = 0.0
    for row, art in enumerate(bundle.artworks):
        own = store.of_artwork(row)
        if not len(own):
            continue
        rgb = load_collection_image(csv_path, art["image"], max_side=cfg["max_side"])
        sx, sy = rgb.shape[1] / art["width"], rgb.shape[0] / art["height"]
        segs = []
        for j in own:
            rec = store.records[j]
            x, y, w, h = rec["bbox"]
            segs.append(amg.Segment(mask=decode_rle(rec["rle"]), bbox=(x * sx, y * sy, w * sx, h * sy),
                                    area=rec["area"], predicted_iou=rec["predicted_iou"],
                                    stability=rec["stability"], point=(0.0, 0.0)))
        t0 = time.perf_counter()
        crop[own] = embedder.embed_arrays([segment_vectors.cutout(rgb, s, fill) for s in segs], cfg["crop_batch"])
        t_crop += time.perf_counter() - t0
        progress("crop vectors of the bundle's segments", row + 1, n_art)
    photos = [p for p in labelled_photos(queries, bundle) if p.expected]
    query_vectors = np.zeros((len(photos), embedder.dim), np.float32)
    for i, p in enumerate(photos):
        query_vectors[i] = embedder.embed_arrays([load_image(p.source, max_side=cfg["max_side"]).rgb])[0]
        progress("detail photo vectors", i + 1, len(photos))
    owners = np.asarray(store.artwork)
    out = {"segments": len(owners), "queries": len(photos), "chance_recall_at_10": round(min(10, n_art) / n_art, 4),
           "crop_embed_s_per_segment": round(t_crop / max(len(owners), 1), 4)}
    for name, vecs, own in (("pooled", np.asarray(store.vectors), owners), ("crop", crop, owners),
                            ("whole_image", np.asarray(bundle.embeddings), np.arange(n_art))):
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(np.ascontiguousarray(vecs, np.float32))
        _, ids = index.search(query_vectors, min(len(vecs), 200))
        ranks = []
        for i, p in enumerate(photos):
            seen: list[int] = []
            for j in ids[i]:
                a = int(own[j])
                if a not in seen:
                    seen.append(a)
            hit = [r for r, a in enumerate(seen) if a in p.expected]
            ranks.append(hit[0] + 1 if hit else 10**6)
        ranks_arr = np.asarray(ranks)
        out[name] = {"recall_at_1": round(float(np.mean(ranks_arr <= 1)), 4),
                     "recall_at_10": round(float(np.mean(ranks_arr <= 10)), 4)}
    return out
