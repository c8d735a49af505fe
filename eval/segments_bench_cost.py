"""The cost part of `artlens bench segments`: segmentation + segment vectors per artwork, our recipe against
the baseline recipe (segment-anything's mask defaults + one DINOv2 forward per cut-out), on the same images.

Also the collection sampling the other parts share (docs/segments-benchmark.md).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.embedder import Embedder
from artlens.errors import CollectionError
from artlens.indexing import amg, segment_collection, segment_vectors
from artlens.indexing.collection import load_collection_image, read_collection
from artlens.indexing.sam_model import SamModel
from artlens.verification import FEATURE_CONFIG

BASELINE_GPU_DAYS_800K = 80.0  # the baseline's own published projection for 800,000 artworks on one GPU
Progress = Callable[[str, int, int], None]



def sample_rows(collection_csv: Path, count: int | None, seed: int) -> list:
    """``count`` rows of a collection, seeded, spread over its sources in proportion (all when None)."""
    collection = read_collection(collection_csv)
    rows = list(collection.rows)
    if not rows:
        raise CollectionError(f"{collection_csv}: no rows")
    if count is None or count >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    by_source: dict[str, list] = {}
    for row in rows:
        by_source.setdefault(row.metadata.get("source", ""), []).append(row)
    picked = []
    for members in by_source.values():
        share = max(1, round(count * len(members) / len(rows)))
        picked += [members[i] for i in sorted(rng.choice(len(members), size=min(share, len(members)),
                                                          replace=False).tolist())]
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(picked[:count] if len(picked) > count else picked, key=lambda r: order[id(r)])


def limited_collection(collection_csv: Path, limit: int | None, seed: int) -> Path:
    """The collection itself, or a CSV of ``limit`` of its artworks (spread over its sources) beside it."""
    if limit is None:
        return collection_csv
    keep = {r.object_id for r in sample_rows(collection_csv, limit, seed)}
    out = collection_csv.with_name(f"collection-{limit}.csv")
    with open(collection_csv, newline="", encoding="utf-8") as src:
        reader = csv.DictReader(src)
        rows = [r for r in reader if r["object_id"] in keep]
        fields = reader.fieldnames or []
    with open(out, "w", newline="", encoding="utf-8") as dst:
        writer = csv.DictWriter(dst, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def time_ours(sam: SamModel, embedder: Embedder, rgb: np.ndarray, amg_config: dict,
              detail_rgb: np.ndarray | None = None) -> dict:
    """Our recipe on one artwork; with ``detail_rgb`` (the reference at ``detail_side``) the segments' detail
    features are extracted and timed too, as the bundle build does."""
    t0 = time.perf_counter()
    embedding = sam.encode(rgb)
    t1 = time.perf_counter()
    segs = amg.generate(sam, rgb, amg_config, embedding=embedding)
    t2 = time.perf_counter()
    _, vecs = segment_vectors.segment_vectors_pooled(embedder, rgb, [s.mask for s in segs])
    t3 = time.perf_counter()
    if detail_rgb is not None:
        size = (rgb.shape[1], rgb.shape[0])
        for seg in segs:
            segment_collection.detail_features(detail_rgb, seg.bbox, size, size, segment_collection.DEFAULT_CONFIG,
                                               FEATURE_CONFIG)
    t4 = time.perf_counter()
    return {"encode_s": t1 - t0, "masks_s": t2 - t1, "embed_s": t3 - t2, "detail_s": t4 - t3, "total_s": t4 - t0,
            "segments": len(vecs)}


def time_baseline(sam: SamModel, embedder: Embedder, rgb: np.ndarray, amg_config: dict, batch: int) -> dict:
    t0 = time.perf_counter()
    embedding = sam.encode(rgb)
    t1 = time.perf_counter()
    segs = amg.generate(sam, rgb, amg_config, embedding=embedding)
    t2 = time.perf_counter()
    vecs = segment_vectors.crop_vectors(embedder, rgb, segs, batch_size=batch)
    t3 = time.perf_counter()
    return {"encode_s": t1 - t0, "masks_s": t2 - t1, "embed_s": t3 - t2, "total_s": t3 - t0, "segments": len(vecs)}


def bench_cost(sam: SamModel, embedder: Embedder, collection_csv: Path, cfg: dict,
               progress: Progress | None = None, log: Callable[[dict], None] | None = None) -> dict:
    """Per artwork, ours then the baseline on the same decoded image; medians and means over the sample."""
    collection = read_collection(collection_csv)
    rows = sample_rows(collection_csv, cfg["cost_images"], cfg["seed"] + 1)
    tick = progress or (lambda stage, done, total: None)
    # Warm-up outside the clock: the first ONNX Runtime runs allocate their arenas.
    warm = load_collection_image(collection.path, rows[0].image, max_side=cfg["max_side"])
    segment_vectors.forward_grid(embedder, warm)
    sam.decode(sam.encode(warm), np.array([[512.0, 512.0]]), (64, 64))
    per_image = []
    for i, row in enumerate(rows, start=1):
        rgb = load_collection_image(collection.path, row.image, max_side=cfg["max_side"])
        detail_rgb = load_collection_image(collection.path, row.image,
                                           max_side=segment_collection.DEFAULT_CONFIG["detail_side"])
        ours = time_ours(sam, embedder, rgb, cfg["ours_amg"], detail_rgb)
        base = time_baseline(sam, embedder, rgb, cfg["baseline_amg"], cfg["crop_batch"])
        per_image.append({"object_id": row.object_id, "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                          "ours": _rounded(ours), "baseline": _rounded(base)})
        if log:  # the baseline takes minutes per artwork: keep each as it comes
            log(per_image[-1])
        tick("cost (ours vs baseline, per artwork)", i, len(rows))

    def mean(who: str, key: str) -> float:
        return float(np.mean([p[who][key] for p in per_image]))

    ours_s, base_s = mean("ours", "total_s"), mean("baseline", "total_s")
    ours_seg, base_seg = mean("ours", "segments"), mean("baseline", "segments")
    days_ours = ours_s * 800_000 / 86400
    days_base = base_s * 800_000 / 86400
    return {
        "images": len(per_image),
        "ours_s_per_image": round(ours_s, 3),
        "baseline_s_per_image": round(base_s, 3),
        "speedup": round(base_s / ours_s, 2) if ours_s > 0 else float("nan"),
        "ours_segments_per_image": round(ours_seg, 2),
        "baseline_segments_per_image": round(base_seg, 2),
        "stages_mean_s": {who: {k: round(mean(who, k), 3) for k in ("encode_s", "masks_s", "embed_s", "detail_s")
                                if k in per_image[0][who]} for who in ("ours", "baseline")},
        "projection_800k": {
            "this_machine_cpu_days_ours": round(days_ours, 1),
            "this_machine_cpu_days_baseline": round(days_base, 1),
            "gpu": "not measured: no GPU was available to this run. The figure reported for the baseline recipe was "
                   f"{BASELINE_GPU_DAYS_800K:g} GPU-days; if the measured ratio held on a GPU, ours would take "
                   f"{BASELINE_GPU_DAYS_800K / (base_s / ours_s):.1f} GPU-days (an extrapolation, not a measurement)"
            if ours_s > 0 else "not measured",
        },
        "per_image": per_image,
    }


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}
