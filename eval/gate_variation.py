"""How much the regression gates' numbers move between machines, measured on this one.

Each configuration runs in a fresh process (the variables must be set before the libraries load): it builds the
gate bundles of the real sets with the tiny random-init model and evaluates them (eval/gates.py). The summary
compares every configuration with the first: the calibration's threshold in inliers, the largest change of an
expected answer's confidence and inliers, and which answers flipped.

    python -m artlens.eval.gate_variation --out out/gate-variation [--photos 200] [--sets estense,smvs]

``avx2`` emulates a CPU without AVX-512 (an AVX2-only AMD EPYC, say) on one that has it: OpenCV, NumPy, OpenBLAS
and FAISS are each told not to use their AVX-512 kernels. ONNX Runtime has no such switch; its output does not
enter the decisions of a random-init bundle (the shortlist and calibration use local features only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {"estense": SHARED / "estense", "smvs": SHARED / "smvs-museum"}
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "avx2": {"OPENCV_CPU_DISABLE": "AVX512-SKX", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
             "OPENBLAS_CORETYPE": "Haswell", "FAISS_SIMD_LEVEL": "AVX2"},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "omp-1-thread": {"OMP_NUM_THREADS": "1"},
    "ort-1-thread": {"ARTLENS_ORT_THREADS": "1"},
    "opencv-1-thread": {"OPENCV_FOR_THREADS_NUM": "1"},
}


def measure(out: Path, sets: list[str], photos: int) -> None:
    """One configuration, in this process: build, evaluate, write result.json."""
    from artlens.export.dinov2 import export_dinov2
    from artlens.recognition.recognizer import Recognizer

    from .gates import build_gate_bundle, gate_result

    model = out / "tiny"
    if not (model / "model.json").exists():
        export_dinov2("artlens/dinov2-tiny", model, random_init=True, seed=0)
    results = {}
    for name in sets:
        bundle = build_gate_bundle(model, SETS[name] / "collection.csv", out / name, photos)
        results[name] = gate_result(Recognizer(bundle), SETS[name] / "queries.csv")
    (out / "result.json").write_text(json.dumps(results, indent=1))


def summarise(results: dict[str, dict]) -> dict:
    """Each configuration against the first, per set."""
    first_name = next(iter(results))
    summary: dict = {}
    for config, per_set in results.items():
        for name, result in per_set.items():
            ref = results[first_name][name]
            ref_answers = {(a["image"], a["object_id"]): a for a in ref["answers"]}
            conf_change = inlier_change = 0.0
            flipped = []
            for answer in result["answers"]:
                then = ref_answers[(answer["image"], answer["object_id"])]
                conf_change = max(conf_change, abs(answer["confidence"] - then["confidence"]))
                inlier_change = max(inlier_change, abs(answer["inliers"] - then["inliers"]))
                if answer["answered"] != then["answered"]:
                    flipped.append(f"{answer['image']} {answer['object_id']} ({then['inliers']} → "
                                   f"{answer['inliers']} inliers, {then['confidence']} → {answer['confidence']})")
            summary.setdefault(name, {})[config] = {
                "threshold_inliers": result["threshold_inliers"], "metrics": result["metrics"],
                "strongest_wrong": result["strongest_wrong"], "max_confidence_change": round(conf_change, 5),
                "max_inlier_change": inlier_change, "flipped": flipped}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=200, help="simulated calibration photos (the gates' setting)")
    parser.add_argument("--sets", default="estense,smvs")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one configuration, in-process
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    if args.measure:
        measure(args.out, sets, args.photos)
        return 0
    results = {}
    for config in [c for c in args.configs.split(",") if c]:
        folder = args.out / config
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "result.json").exists():
            env = {**os.environ, **CONFIGS[config]}
            print(f"{config}: {' '.join(f'{k}={v}' for k, v in CONFIGS[config].items()) or 'as installed'}",
                  flush=True)
            subprocess.run([sys.executable, "-m", "artlens.eval.gate_variation", "--measure", "--out", str(folder),
                            "--photos", str(args.photos), "--sets", ",".join(sets)], env=env, check=True)
        results[config] = json.loads((folder / "result.json").read_text())
    summary = summarise(results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name, per_config in summary.items():
        for config, row in per_config.items():
            print(f"{name:8} {config:18} threshold at {row['threshold_inliers']} inliers; max change: confidence "
                  f"{row['max_confidence_change']}, inliers {row['max_inlier_change']}; strongest wrong "
                  f"{row['strongest_wrong']}; flipped: {row['flipped'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
