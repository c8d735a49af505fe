"""`artlens bench segments`: indexing cost against a baseline recipe, detail-photo recall with and without
segments, and segment index quality, in one run with the machine described (docs/segments-benchmark.md).

Parts, each usable alone: ``cost`` (eval/segments_bench_cost.py), ``recall`` and ``masks`` (here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from artlens.config import with_defaults
from artlens.embedder import Embedder
from artlens.errors import CollectionError
from artlens.indexing import amg
from artlens.indexing.collection import read_collection
from artlens.indexing.sam_model import SamModel

from .bench import describe_machine
from .segments_bench_cost import Progress, bench_cost, limited_collection
from .segments_bench_metrics import operating_point, segment_index_quality, segment_vector_modes

PARTS = ("cost", "recall", "masks")

DEFAULT_CONFIG: dict = {
    "cost_images": 8,  # artworks timed with both recipes (the baseline takes minutes per artwork on 2 CPU cores)
    "collection_limit": None,  # artworks of museum-mix indexed for the recall part (None: all 336)
    "detail_queries": 200,
    "nomatch_queries": 100,  # details of the 24 held-out Met paintings (false-positive rate)
    "target_fpr": 0.02,
    "seed": 0,
    "max_side": 800,  # images are segmented and embedded at the size the bundle build decodes them
    "baseline_amg": amg.SAM_DEFAULTS,
    "ours_amg": amg.DEFAULT_CONFIG,
    "crop_batch": 16,
    "segment_mode": "pooled",
    "calibration_photos": 200,  # simulated visitor photos each bundle is calibrated on (as `index build`)
    "calibration_fpr": 0.01,  # the build's default target
    "compare_modes": False,  # crop vs pooled vectors of the segment bundle's masks (docs/segments-benchmark.md)
    "masks_artworks": 20,  # collection of the masks part (the baseline's masks: ≈ 3 min per artwork on 2 cores)
    "masks_detail_queries": 120,
    "masks_nomatch_queries": 60,
}

QUICK_CONFIG: dict = {  # a smoke test of every part for `make test`: settings shrunk, numbers meaningless
    "cost_images": 1,
    "collection_limit": 4,
    "detail_queries": 3,
    "nomatch_queries": 2,
    "calibration_photos": 4,
    "masks_artworks": 3,
    "masks_detail_queries": 3,
    "masks_nomatch_queries": 2,
    "baseline_amg": {**amg.SAM_DEFAULTS, "points_per_side": 4},
    "ours_amg": {**amg.DEFAULT_CONFIG, "points_per_side": 2},
}


def _eval(bundle: Path, queries: Path, model_dir: Path, config: dict | None, progress: Progress, label: str) -> dict:
    from artlens.recognition.recognizer import Recognizer

    from .evaluate import evaluate

    recognizer = Recognizer(bundle, model_dir, config=config)
    report = evaluate(recognizer, queries, progress=lambda d, t: progress(f"eval {label}", d, t))
    return report


def _summary(report: dict, target_fpr: float) -> dict:
    keys = ("recall", "precision_at_1", "precision", "false_positive_rate", "shortlist_recall", "threshold",
            "n_match_queries", "n_nomatch_queries")
    out = {k: report[k] for k in keys}
    out["latency_ms"] = {"p50": report["latency_ms"]["p50"], "p95": report["latency_ms"]["p95"]}
    out[f"at_fpr_{target_fpr:g}"] = operating_point(report, target_fpr)
    return out


def _build_calibrated(model_dir: Path, sam_dir: Path, collection: Path, path: Path, segments: dict | None,
                      cfg: dict, progress: Progress, name: str) -> float:
    """Build (and calibrate, as `index build` does) one bundle; with ``segments`` None, whole-image only.
    Returns the build's wall seconds."""
    from artlens.calibration.calibrate import build_calibrated_bundle

    started = time.perf_counter()
    # The segment bundle keeps its DINOv2 segment vectors whatever the model: they are measured here.
    config = {"segments": segments, "always_embed": True} if segments else None
    build_calibrated_bundle(model_dir, collection, path, config=config,
                            calibration={"synthetic_photos": cfg["calibration_photos"],
                                         "target_fpr": cfg["calibration_fpr"]},
                            progress=lambda stage, done, total: progress(f"build {name}: {stage}", done, total),
                            sam_dir=sam_dir if segments else None)
    return round(time.perf_counter() - started, 1)


def _detail_set(work: Path, cfg: dict, limit: int | None, count: int, nomatch: int) -> tuple[Path, int, Path]:
    """(collection CSV, artworks, queries CSV): ``limit`` museum-mix artworks (None: all) and their detail photos,
    ``count`` of them plus ``nomatch`` of the held-out distractors; made once per setting under ``work``."""
    from .datasets import museum_mix
    from .details import make_detail_queries

    mix = museum_mix(work / "museum-mix")
    collection = limited_collection(mix.collection, limit, cfg["seed"])
    n_art = len(read_collection(collection).rows)
    details_dir = work / f"details-{n_art}-{count}-{nomatch}-s{cfg['seed']}"
    queries = make_detail_queries(collection, details_dir, count=count, seed=cfg["seed"],
                                  distractors_csv=mix.distractors, nomatch_count=nomatch)
    return collection, n_art, queries


def bench_masks(model_dir: Path, sam_dir: Path, work: Path, cfg: dict, progress: Progress) -> dict:
    """Detail-photo recall with our masks against the baseline recipe's masks, everything else equal.

    Three bundles of the same ``masks_artworks`` museum-mix artworks, each calibrated as `index build` does:
    whole-image only; segments from ``ours_amg`` with pooled vectors (our default); segments from
    ``baseline_amg`` (segment-anything's defaults) with crop vectors (the baseline recipe). Both segment
    bundles get the same local descriptors and detail features of their segments, so the masks are what differs.
    Their builds also time segmentation over every artwork of the collection (``seconds``: SAM, segment
    vectors, detail features), a second, larger — but not interleaved — cost sample."""
    from artlens.indexing.store.bundle import read_meta

    collection, n_art, queries = _detail_set(work, cfg, cfg["masks_artworks"], cfg["masks_detail_queries"],
                                             cfg["masks_nomatch_queries"])
    recipes = {"whole_only": None,
               "ours": {"mode": cfg["segment_mode"], "amg": cfg["ours_amg"]},
               "baseline": {"mode": "crop", "amg": cfg["baseline_amg"]}}
    target = cfg["target_fpr"]
    result: dict = {"collection": str(collection), "artworks": n_art, "queries": str(queries)}
    for name, seg_cfg in recipes.items():  # the slow baseline last: the others are in the log if it is stopped
        path = work / f"masks-{name}-{n_art}"
        build_s = _build_calibrated(model_dir, sam_dir, collection, path, seg_cfg, cfg, progress, f"masks {name}")
        report = _eval(path, queries, model_dir, None, progress, f"masks {name}")
        (work / f"eval-masks-{name}-{n_art}.json").write_text(json.dumps(report, indent=1))
        entry = {"build_s": build_s, **_summary(report, target)}
        if seg_cfg:
            seg_meta = read_meta(path)["segments"]
            seconds = seg_meta["seconds"]
            entry.update({"segments": seg_meta["count"], "segment_seconds": seconds,
                          "segment_s_per_image": round(sum(seconds.values()) / n_art, 2)})
        result[name] = entry
        progress("masks: bundles built and evaluated", list(recipes).index(name) + 1, len(recipes))
    result["detail_queries"] = result["whole_only"]["n_match_queries"]
    result["nomatch_queries"] = result["whole_only"]["n_nomatch_queries"]
    return result


def bench_recall(model_dir: Path, sam_dir: Path, work: Path, cfg: dict, progress: Progress) -> dict:
    collection, n_art, queries = _detail_set(work, cfg, cfg["collection_limit"], cfg["detail_queries"],
                                             cfg["nomatch_queries"])
    bundles, build_s = {}, {}
    for name, seg_cfg in (("whole_only", None),
                          ("segments", {"mode": cfg["segment_mode"], "amg": cfg["ours_amg"]})):
        path = work / f"bundle-{name}-{n_art}"
        build_s[name] = _build_calibrated(model_dir, sam_dir, collection, path, seg_cfg, cfg, progress, name)
        bundles[name] = path
    whole = _eval(bundles["whole_only"], queries, model_dir, None, progress, "whole-only")
    seg = _eval(bundles["segments"], queries, model_dir, None, progress, "segments")
    for name, report in (("whole_only", whole), ("segments", seg)):  # per-query answers, for looking into misses
        (work / f"eval-{name}-{n_art}.json").write_text(json.dumps(report, indent=1))
    target = cfg["target_fpr"]
    result = {
        "collection": str(collection), "artworks": n_art, "queries": str(queries),
        "detail_queries": whole["n_match_queries"], "nomatch_queries": whole["n_nomatch_queries"],
        "build_s": build_s, "whole_only": _summary(whole, target), "segments": _summary(seg, target),
    }
    from artlens.indexing.store.bundle import load_bundle

    store = load_bundle(bundles["segments"]).segments
    result["segment_count"] = len(store)
    result["segment_index"] = {
        "dinov2": segment_index_quality(store.index, np.asarray(store.vectors), seed=cfg["seed"]),
        "local": segment_index_quality(store.local_index, np.asarray(store.local), seed=cfg["seed"]),
    }
    if cfg["compare_modes"]:
        result["vector_modes"] = segment_vector_modes(bundles["segments"], Embedder(model_dir), queries, cfg,
                                                      progress)
    return result


def _logged(progress: Progress | None, path: Path) -> Progress:
    """Progress also appended to a plain log (a long run in the background shows where it is)."""
    last: dict[str, float] = {}

    def tick(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last.get(stage, 0.0) > 30:
            last[stage] = now
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {stage} {done}/{total}\n")
        if progress:
            progress(stage, done, total)

    return tick


def bench_segments(model_dir: str | Path, sam_dir: str | Path, work: str | Path, *, parts: list[str] | None = None,
                   quick: bool = False, config: dict | None = None, progress: Progress | None = None) -> dict:
    """Run the chosen parts; returns the JSON report (its summary keys also at the top level)."""
    parts = list(parts or PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise CollectionError(f"unknown benchmark part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    cfg = with_defaults(DEFAULT_CONFIG, QUICK_CONFIG if quick else None, config)
    model_dir, sam_dir, work = Path(model_dir), Path(sam_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    tick = _logged(progress, work / f"progress-{'-'.join(parts)}.log")
    embedder = Embedder(model_dir)
    sam = SamModel(sam_dir)
    started = time.perf_counter()
    result: dict = {
        "benchmark": "segments", "quick": quick,
        "machine": {**describe_machine(), "onnxruntime_providers": embedder.providers, "gpu": "none used"},
        "models": {"dinov2": embedder.info.public(), "sam": sam.info.public()},
        "settings": {k: v for k, v in cfg.items()}, "parts": parts,
    }
    summary: dict = {}
    if "cost" in parts:
        from .datasets import museum_mix

        mix = museum_mix(work / "museum-mix")
        partial = work / "cost-per-image.jsonl"
        partial.unlink(missing_ok=True)

        def keep(record: dict) -> None:
            with open(partial, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

        cost = bench_cost(sam, embedder, mix.collection, cfg, tick, keep)
        result["cost"] = cost
        summary.update({k: cost[k] for k in ("ours_s_per_image", "baseline_s_per_image", "speedup")})
    if "recall" in parts:
        recall = bench_recall(model_dir, sam_dir, work, cfg, tick)
        result["recall"] = recall
        target = cfg["target_fpr"]
        seg_at, whole_at = recall["segments"][f"at_fpr_{target:g}"], recall["whole_only"][f"at_fpr_{target:g}"]
        summary.update({
            "detail_recall_segments": seg_at["recall"],
            "detail_recall_whole_only": whole_at["recall"],
            "false_positive_rate": max(seg_at["false_positive_rate"], whole_at["false_positive_rate"]),
            "detail_recall_ratio": round(seg_at["recall"] / whole_at["recall"], 2) if whole_at["recall"] else None,
            "detail_recall_segments_calibrated": recall["segments"]["recall"],
            "detail_recall_whole_only_calibrated": recall["whole_only"]["recall"],
            "false_positive_rate_calibrated": max(recall["segments"]["false_positive_rate"],
                                                  recall["whole_only"]["false_positive_rate"]),
        })
        dino = recall["segment_index"]["dinov2"]
        summary.update({"bytes_per_segment_vector": dino["bytes_per_vector"],
                        "segment_recall_at_10": dino["recall_at_10"], "segments": recall["segment_count"]})
    if "masks" in parts:
        masks = bench_masks(model_dir, sam_dir, work, cfg, tick)
        result["masks"] = masks
        at = f"at_fpr_{cfg['target_fpr']:g}"
        summary.update({
            "masks_artworks": masks["artworks"],
            "masks_detail_recall_ours": masks["ours"][at]["recall"],
            "masks_detail_recall_baseline": masks["baseline"][at]["recall"],
            "masks_detail_recall_whole_only": masks["whole_only"][at]["recall"],
            "masks_false_positive_rate": max(masks[n][at]["false_positive_rate"]
                                             for n in ("ours", "baseline", "whole_only")),
            "masks_segment_s_per_image_ours": masks["ours"]["segment_s_per_image"],
            "masks_segment_s_per_image_baseline": masks["baseline"]["segment_s_per_image"],
        })
    result["summary"] = summary
    result.update(summary)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
