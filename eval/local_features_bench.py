"""Learned local features (XFeat, ALIKED on ONNX Runtime) against RootSIFT for verification, by brute force.

A measurement, not part of recognition: every query photo is verified against every reference of the collection
with artlens's own matching and geometry (``verification.verify``), so the numbers say what the features alone
give, with no shortlist in front. Per method and analysed size: precision@1 (the reference with most plausible
inliers is a right one), the 10th percentile of the inliers of the right reference, the most inliers any
no-match photo gets from any reference, and the time to extract the features of one photo.

    python -m artlens.eval.local_features_bench --data ../shared/data/smvs-museum --xfeat DIR --aliked DIR \
        --methods rootsift xfeat aliked --out r.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from artlens.calibration.queries import read_queries
from artlens.config import with_defaults
from artlens.imaging import load_image, to_gray
from artlens.local_features import EXPORT_MODELS, is_learned
from artlens.local_model import LocalFeatureModel
from artlens.verification import LocalFeatures, extract, prepare, verify

from .bench import describe_machine

DEFAULT_CONFIG: dict[str, Any] = {
    "data": "../shared/data/smvs-museum",  # collection.csv + queries.csv (no-match rows: empty `expected`)
    # learned method → an `artlens export local-features` directory; a method without one is exported into `work`
    "models": {"xfeat": None, "aliked": None},
    "work": None,  # where those exports go (None: a temporary directory)
    "methods": ["rootsift", "xfeat"],
    "settings": [{"max_side": 800, "max_keypoints": 1000}, {"max_side": 1024, "max_keypoints": 2048}],
    # Learned descriptors are matched as their authors do (mutual nearest neighbours); RootSIFT as artlens does.
    # "METHOD+ratio" runs a learned method with the ratio test.
    "matching": {"rootsift": {"ratio": 0.85, "mutual": True}, "xfeat": {"ratio": None, "mutual": True},
                 "xfeat+ratio": {"ratio": 0.85, "mutual": True}, "aliked": {"ratio": None, "mutual": True},
                 "aliked+ratio": {"ratio": 0.85, "mutual": True}},
    "threads": 0,  # ONNX Runtime intra-op threads (0: ARTLENS_ORT_THREADS or its default)
    # accuracy: brute-force verification per (method, setting); timing: extraction only, every (method, setting)
    # in turn on each photo, so that all see the same machine load.
    "parts": ["accuracy", "timing"],
    "timing_repeat": 2,
}

Progress = Callable[[str], None]


def bench_local_features(config: dict | None = None, progress: Progress | None = None) -> dict:
    """Run every (method, setting) of ``config`` (DEFAULT_CONFIG keys); return the report."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    say = progress or (lambda line: None)
    data = Path(cfg["data"])
    references = _collection(data / "collection.csv")
    queries = read_queries(data / "queries.csv")
    models = {name: _learned_model(name, cfg, say) for name in sorted({_base(m) for m in cfg["methods"]})
              if is_learned(name)}
    runs = []
    for setting in cfg["settings"] if "accuracy" in cfg["parts"] else []:
        for method in cfg["methods"]:
            say(f"{method} at {setting['max_side']} px, {setting['max_keypoints']} keypoints")
            runs.append(_run(method, setting, cfg["matching"][method], references, queries, models, say))
    # Timed on the photos of artworks: the no-match photos of SMVS are smaller (640×480) than either max_side.
    timing = _timing(cfg, [q[1] for q in queries if q[2]], models, say) if "timing" in cfg["parts"] else None
    machine = describe_machine()
    if models:
        machine["onnxruntime_providers"] = next(iter(models.values())).providers
    return {"data": str(data), "references": len(references), "queries": sum(1 for q in queries if q[2]),
            "nomatch_queries": sum(1 for q in queries if not q[2]), "runs": runs, "timing": timing, "machine": machine,
            "models": {name: model.info.public() for name, model in models.items()}, "config": cfg}


def _base(method: str) -> str:
    """The feature method of a bench method name ("xfeat+ratio" → "xfeat")."""
    return method.split("+")[0]


def _collection(path: Path) -> list[tuple[str, Path]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [(row["object_id"], path.parent / row["image"]) for row in csv.DictReader(fh)]


def _learned_model(method: str, cfg: dict, say: Progress) -> LocalFeatureModel:
    model_dir = (cfg["models"] or {}).get(method)
    if model_dir is None:
        import tempfile

        from artlens.export.local_features import export_local_features

        work = Path(cfg["work"] or tempfile.mkdtemp(prefix="features-bench-"))
        model_dir = work / EXPORT_MODELS[method]
        if not (model_dir / "model.json").is_file():
            say(f"exporting {EXPORT_MODELS[method]} to {model_dir}")
            export_local_features(EXPORT_MODELS[method], model_dir)
    top = max(s["max_keypoints"] for s in cfg["settings"])
    return LocalFeatureModel(model_dir, max_keypoints=top, threads=cfg["threads"] or None)


def _extractor(method: str, setting: dict, models: dict) -> Callable[[np.ndarray], LocalFeatures]:
    side, count = setting["max_side"], setting["max_keypoints"]
    if is_learned(_base(method)):
        model = models[_base(method)]
        return lambda rgb: model.extract(rgb, max_side=side, max_keypoints=count)
    feature_config = {"method": method, "max_side": side, "max_keypoints": count}
    return lambda rgb: extract(to_gray(rgb), feature_config)


def _features(paths: list[Path], fn: Callable[[np.ndarray], LocalFeatures], max_side: int
              ) -> tuple[list[LocalFeatures], list[float]]:
    """Features of each photo, decoded as recognition decodes it, and the extraction time of each (ms)."""
    feats, times = [], []
    for path in paths:
        rgb = load_image(path, max_side=max_side).rgb
        started = time.perf_counter()
        feats.append(fn(rgb))
        times.append(1000 * (time.perf_counter() - started))
    return feats, times


def _timing(cfg: dict, photos: list[Path], models: dict, say: Progress) -> dict:
    """Extraction ms per photo (median, p90) of each distinct extractor, interleaved photo by photo."""
    methods = sorted({_base(m) for m in cfg["methods"]})
    cases = {f"{m} {s['max_side']} px {s['max_keypoints']} kp": (_extractor(m, s, models), s["max_side"])
             for s in cfg["settings"] for m in methods}
    say(f"timing {len(cases)} extractors on {len(photos)} photos, {cfg['timing_repeat']}×")
    times: dict[str, list[float]] = {name: [] for name in cases}
    for path in photos:
        images = {side: load_image(path, max_side=side).rgb for _, side in cases.values()}
        for _ in range(cfg["timing_repeat"]):
            for name, (fn, side) in cases.items():
                started = time.perf_counter()
                fn(images[side])
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: {"median_ms": round(float(np.median(t)), 1), "p90_ms": round(float(np.percentile(t, 90)), 1)}
            for name, t in times.items()}


def _run(method: str, setting: dict, matching: dict, references: list[tuple[str, Path]],
         queries: list[tuple[int, Path, list[str]]], models: dict, say: Progress) -> dict:
    fn = _extractor(method, setting, models)
    side = setting["max_side"]
    fn(load_image(queries[0][1], max_side=side).rgb)  # warm-up: the first ONNX run allocates its buffers
    ref_feats, ref_ms = _features([p for _, p in references], fn, side)
    query_feats, query_ms = _features([q[1] for q in queries], fn, side)
    ref_desc = [prepare(f) for f in ref_feats]
    verify_config = {"matching": matching}
    inliers = np.zeros((len(queries), len(references)), np.int32)
    started = time.perf_counter()
    for i, query in enumerate(query_feats):
        q_desc = prepare(query)
        for j, (ref, r_desc) in enumerate(zip(ref_feats, ref_desc, strict=True)):
            result = verify(query, q_desc, ref, r_desc, verify_config)
            inliers[i, j] = result.inliers if result.plausible else 0
    verify_ms = 1000 * (time.perf_counter() - started) / inliers.size
    ids = [object_id for object_id, _ in references]
    match_rows = [i for i, q in enumerate(queries) if q[2]]
    nomatch_rows = [i for i, q in enumerate(queries) if not q[2]]
    correct, true_inliers = 0, []
    for i in match_rows:
        expected = {ids.index(e) for e in queries[i][2] if e in ids}
        best = int(np.argmax(inliers[i]))
        correct += int(inliers[i, best] > 0 and best in expected)
        true_inliers.append(int(max(inliers[i, j] for j in expected)) if expected else 0)
    nomatch_max = int(inliers[nomatch_rows].max()) if nomatch_rows else 0
    true = np.asarray(true_inliers)
    report = {
        "method": method, **setting, "matching": matching,
        "precision_at_1": round(correct / max(1, len(match_rows)), 4),
        "true_inliers_p10": float(np.percentile(true, 10)) if len(true) else 0.0,
        "true_inliers_median": float(np.median(true)) if len(true) else 0.0,
        "nomatch_max_inliers": nomatch_max,
        "true_above_nomatch_max": int((true > nomatch_max).sum()),
        "keypoints_median": float(np.median([len(f) for f in query_feats + ref_feats])),
        "extract_ms_median": round(float(np.median(query_ms)), 1),
        "extract_ms_p90": round(float(np.percentile(query_ms, 90)), 1),
        "reference_extract_ms_median": round(float(np.median(ref_ms)), 1),
        "verify_ms_per_pair": round(verify_ms, 2),
    }
    say(json.dumps({k: report[k] for k in ("method", "max_side", "max_keypoints", "precision_at_1",
                                           "true_inliers_p10", "nomatch_max_inliers", "extract_ms_median")}))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_CONFIG["data"])
    parser.add_argument("--xfeat", help="XFeat model directory (default: export one into --work)")
    parser.add_argument("--aliked", help="ALIKED model directory (default: export aliked-n16 into --work)")
    parser.add_argument("--work")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_CONFIG["methods"])
    parser.add_argument("--parts", nargs="+", default=DEFAULT_CONFIG["parts"], choices=DEFAULT_CONFIG["parts"])
    parser.add_argument("--out", help="write the report here as JSON")
    args = parser.parse_args(argv)
    report = bench_local_features({"data": args.data, "models": {"xfeat": args.xfeat, "aliked": args.aliked},
                                   "work": args.work,
                                   "methods": args.methods, "parts": args.parts}, progress=print)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
