"""`artlens bench segments`: issue 3's numbers in one run, with the machine described.

Two parts, each usable alone (``parts``):

* ``cost`` — segmentation + segment embedding per artwork, ours against the museum prototype's recipe, same SAM,
  same DINOv2, same images, interleaved image by image so both see the same machine state:
  - baseline: automatic masks at segment-anything's defaults (``amg.SAM_DEFAULTS``: 32×32 points, its
    thresholds, full-resolution masks) + one DINOv2 forward per masked cut-out (``segment_embed.crop_vectors``);
  - ours: ``amg.DEFAULT_CONFIG`` + ``segment_embed.pooled_vectors`` on the artwork's one forward (the same forward
    that gives its whole-image vector, so it is counted here in full).
* ``masks`` — the "at equal or better detail-query recall" half of the cost comparison: the same pipeline built
  on a smaller collection three times — whole-image only, with our masks and pooled vectors, and with the
  prototype's masks (``amg.SAM_DEFAULTS``) and crop vectors — and recall on detail photos of that collection
  compared at the same false-positive rate. Smaller because the prototype's masks take minutes per artwork here.
* ``recall`` — detail photos (``eval.details``) of a museum-mix collection, recognised by a whole-image-only bundle
  and by a bundle with segments; recall compared at the same false-positive rate. Also the crop and pooled
  segment vectors of the same masks, compared as a shortlist for detail photos (which mode to default to), and
  bytes per segment vector and recall@10 of the bundle's segment indexes against exact search
  (``segment_index_quality``: takes any FAISS index and its vectors, so a compressed builder is measured the same).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.embedder import Embedder
from artlens.errors import CollectionError
from artlens.imaging import load_image
from artlens.indexing import amg, segment_embed
from artlens.indexing import segments as segments_io
from artlens.indexing.collection import fetch_bytes, read_collection, resolve_image
from artlens.indexing.sam import SamModel
from artlens.verification import FEATURE_CONFIG

from .bench import describe_machine

PARTS = ("cost", "recall", "masks")
PROTOTYPE_DAYS_800K = 80.0  # the museum prototype's own projection for 800,000 artworks on one GPU

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
    "masks_artworks": 20,  # collection of the masks part (the prototype's masks: ≈ 3 min per artwork on 2 cores)
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

Progress = Callable[[str, int, int], None]


def _load_rgb(collection_path: Path, image: str, max_side: int) -> np.ndarray:
    return load_image(fetch_bytes(resolve_image(collection_path, image)), name=image, max_side=max_side).rgb


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


# -- cost -------------------------------------------------------------------------------------------------
def time_ours(sam: SamModel, embedder: Embedder, rgb: np.ndarray, amg_config: dict,
              detail_rgb: np.ndarray | None = None) -> dict:
    """Our recipe on one artwork; with ``detail_rgb`` (the reference at ``detail_side``) the segments' detail
    features are extracted and timed too, as the bundle build does."""
    t0 = time.perf_counter()
    embedding = sam.encode(rgb)
    t1 = time.perf_counter()
    segs = amg.generate(sam, rgb, amg_config, embedding=embedding)
    t2 = time.perf_counter()
    _, vecs = segment_embed.segment_vectors_pooled(embedder, rgb, [s.mask for s in segs])
    t3 = time.perf_counter()
    if detail_rgb is not None:
        size = (rgb.shape[1], rgb.shape[0])
        for seg in segs:
            segments_io.detail_features(detail_rgb, seg.bbox, size, size, segments_io.DEFAULT_CONFIG, FEATURE_CONFIG)
    t4 = time.perf_counter()
    return {"encode_s": t1 - t0, "masks_s": t2 - t1, "embed_s": t3 - t2, "detail_s": t4 - t3, "total_s": t4 - t0,
            "segments": len(vecs)}


def time_baseline(sam: SamModel, embedder: Embedder, rgb: np.ndarray, amg_config: dict, batch: int) -> dict:
    t0 = time.perf_counter()
    embedding = sam.encode(rgb)
    t1 = time.perf_counter()
    segs = amg.generate(sam, rgb, amg_config, embedding=embedding)
    t2 = time.perf_counter()
    vecs = segment_embed.crop_vectors(embedder, rgb, segs, batch_size=batch)
    t3 = time.perf_counter()
    return {"encode_s": t1 - t0, "masks_s": t2 - t1, "embed_s": t3 - t2, "total_s": t3 - t0, "segments": len(vecs)}


def bench_cost(sam: SamModel, embedder: Embedder, collection_csv: Path, cfg: dict,
               progress: Progress | None = None, log: Callable[[dict], None] | None = None) -> dict:
    """Per artwork, ours then the baseline on the same decoded image; medians and means over the sample."""
    collection = read_collection(collection_csv)
    rows = sample_rows(collection_csv, cfg["cost_images"], cfg["seed"] + 1)
    tick = progress or (lambda stage, done, total: None)
    # Warm-up outside the clock: the first ONNX Runtime runs allocate their arenas.
    warm = _load_rgb(collection.path, rows[0].image, cfg["max_side"])
    segment_embed.forward_grid(embedder, warm)
    sam.decode(sam.encode(warm), np.array([[512.0, 512.0]]), (64, 64))
    per_image = []
    for i, row in enumerate(rows, start=1):
        rgb = _load_rgb(collection.path, row.image, cfg["max_side"])
        detail_rgb = _load_rgb(collection.path, row.image, segments_io.DEFAULT_CONFIG["detail_side"])
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
            "gpu": "not measured: no GPU was available to this run. The prototype's own figure was "
                   f"{PROTOTYPE_DAYS_800K:g} GPU-days; if the measured ratio held on a GPU, ours would take "
                   f"{PROTOTYPE_DAYS_800K / (base_s / ours_s):.1f} GPU-days (an extrapolation, not a measurement)"
            if ours_s > 0 else "not measured",
        },
        "per_image": per_image,
    }


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


# -- index ------------------------------------------------------------------------------------------------
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


# -- recall -----------------------------------------------------------------------------------------------
def limited_collection(collection_csv: Path, limit: int | None, seed: int) -> Path:
    """The collection itself, or a CSV of ``limit`` of its artworks (spread over its sources) beside it."""
    if limit is None:
        return collection_csv
    import csv

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


def segment_vector_modes(bundle_path: Path, embedder: Embedder, queries: Path, cfg: dict,
                         progress: Progress) -> dict:
    """Crop vs pooled vectors of the *same* masks (the bundle's), as a DINOv2 shortlist for detail photos.

    Pooled vectors are the bundle's own; crop vectors are computed here from the stored masks (RLE) and the
    reference decoded as the build decodes it. Each detail photo's DINOv2 vector searches each set exactly; an
    artwork ranks by its best segment. Whole-image vectors are the third row for comparison."""
    import faiss

    from artlens.indexing.bundle import load_bundle

    from .queries import labelled_photos

    bundle = load_bundle(bundle_path)
    store = bundle.segments
    csv_path = Path(bundle.meta["collection"]["csv"])
    crop = np.zeros_like(np.asarray(store.vectors))
    fill = segment_embed.neutral_fill(embedder)
    n_art = len(bundle.artworks)
    t_crop = 0.0
    for row, art in enumerate(bundle.artworks):
        own = store.of_artwork(row)
        if not len(own):
            continue
        rgb = _load_rgb(csv_path, art["image"], cfg["max_side"])
        sx, sy = rgb.shape[1] / art["width"], rgb.shape[0] / art["height"]
        segs = []
        for j in own:
            rec = store.records[j]
            x, y, w, h = rec["bbox"]
            segs.append(amg.Segment(mask=amg.decode_rle(rec["rle"]), bbox=(x * sx, y * sy, w * sx, h * sy),
                                    area=rec["area"], predicted_iou=rec["predicted_iou"],
                                    stability=rec["stability"], point=(0.0, 0.0)))
        t0 = time.perf_counter()
        crop[own] = embedder.embed_arrays([segment_embed.cutout(rgb, s, fill) for s in segs], cfg["crop_batch"])
        t_crop += time.perf_counter() - t0
        progress("crop vectors of the bundle's segments", row + 1, n_art)
    photos = [p for p in labelled_photos(queries, bundle) if p.expected]
    qvec = np.zeros((len(photos), embedder.dim), np.float32)
    for i, p in enumerate(photos):
        qvec[i] = embedder.embed_arrays([load_image(p.source, max_side=cfg["max_side"]).rgb])[0]
        progress("detail photo vectors", i + 1, len(photos))
    owners = np.asarray(store.artwork)
    out = {"segments": len(owners), "queries": len(photos), "chance_recall_at_10": round(min(10, n_art) / n_art, 4),
           "crop_embed_s_per_segment": round(t_crop / max(len(owners), 1), 4)}
    for name, vecs, own in (("pooled", np.asarray(store.vectors), owners), ("crop", crop, owners),
                            ("whole_image", np.asarray(bundle.embeddings), np.arange(n_art))):
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(np.ascontiguousarray(vecs, np.float32))
        _, ids = index.search(qvec, min(len(vecs), 200))
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


def _build_calibrated(model_dir: Path, sam_dir: Path, collection: Path, path: Path, segments: dict | None,
                      cfg: dict, progress: Progress, name: str) -> float:
    """Build (and calibrate, as `index build` does) one bundle; with ``segments`` None, whole-image only.
    Returns the build's wall seconds."""
    from artlens.indexing.build import build_bundle
    from artlens.recognition.calibrate import calibrate_bundle

    calib = {"synthetic_photos": cfg["calibration_photos"], "target_fpr": cfg["calibration_fpr"]}
    t0 = time.perf_counter()
    build_bundle(model_dir, collection, path, sam_dir=sam_dir if segments else None,
                 config={"segments": segments} if segments else None,
                 progress=lambda stage, d, t: progress(f"build {name}: {stage}", d, t),
                 before_commit=lambda staging: calibrate_bundle(staging, config=calib))
    return round(time.perf_counter() - t0, 1)


def _detail_set(work: Path, cfg: dict, limit: int | None, count: int, nomatch: int) -> tuple[Path, int, Path]:
    """(collection CSV, artworks, queries CSV): ``limit`` museum-mix artworks (None: all) and their detail photos,
    ``count`` of them plus ``nomatch`` of the held-out distractors; made once per setting under ``work``."""
    from .datasets import museum_mix
    from .details import make_detail_queries

    mix = museum_mix(work / "museum-mix")
    collection = limited_collection(mix.collection, limit, cfg["seed"])
    n_art = len(read_collection(collection).rows)
    qdir = work / f"details-{n_art}-{count}-{nomatch}-s{cfg['seed']}"
    queries = make_detail_queries(collection, qdir, count=count, seed=cfg["seed"], distractors_csv=mix.distractors,
                                  nomatch_count=nomatch)
    return collection, n_art, queries


def bench_masks(model_dir: Path, sam_dir: Path, work: Path, cfg: dict, progress: Progress) -> dict:
    """Detail-photo recall with our masks against the prototype's masks, everything else equal.

    Three bundles of the same ``masks_artworks`` museum-mix artworks, each calibrated as `index build` does:
    whole-image only; segments from ``ours_amg`` with pooled vectors (our default); segments from
    ``baseline_amg`` (segment-anything's defaults) with crop vectors (the prototype's recipe). Both segment
    bundles get the same local descriptors and detail features of their segments, so the masks are what differs.
    Their builds also time segmentation over every artwork of the collection (``seconds``: SAM, segment
    vectors, detail features), a second, larger — but not interleaved — cost sample."""
    from artlens.indexing.bundle import read_meta

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
    from artlens.indexing.bundle import load_bundle

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
    """Run the chosen parts; returns the JSON report (issue 3's keys at the top level)."""
    parts = list(parts or PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise CollectionError(f"unknown benchmark part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    cfg = {**DEFAULT_CONFIG, **(QUICK_CONFIG if quick else {}), **(config or {})}
    model_dir, sam_dir, work = Path(model_dir), Path(sam_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    tick = _logged(progress, work / f"progress-{'-'.join(parts)}.log")
    embedder = Embedder(model_dir)
    sam = SamModel(sam_dir)
    started = time.perf_counter()
    result: dict = {
        "benchmark": "segments (issue 3)", "quick": quick,
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
        rec = bench_recall(model_dir, sam_dir, work, cfg, tick)
        result["recall"] = rec
        target = cfg["target_fpr"]
        seg_at, whole_at = rec["segments"][f"at_fpr_{target:g}"], rec["whole_only"][f"at_fpr_{target:g}"]
        summary.update({
            "detail_recall_segments": seg_at["recall"],
            "detail_recall_whole_only": whole_at["recall"],
            "false_positive_rate": max(seg_at["false_positive_rate"], whole_at["false_positive_rate"]),
            "detail_recall_ratio": round(seg_at["recall"] / whole_at["recall"], 2) if whole_at["recall"] else None,
            "detail_recall_segments_calibrated": rec["segments"]["recall"],
            "detail_recall_whole_only_calibrated": rec["whole_only"]["recall"],
            "false_positive_rate_calibrated": max(rec["segments"]["false_positive_rate"],
                                                  rec["whole_only"]["false_positive_rate"]),
        })
        dino = rec["segment_index"]["dinov2"]
        summary.update({"bytes_per_segment_vector": dino["bytes_per_vector"],
                        "segment_recall_at_10": dino["recall_at_10"], "segments": rec["segment_count"]})
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
