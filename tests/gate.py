"""What the two regression gates share: build the set's bundle, evaluate it, check it against its baseline."""

from __future__ import annotations

import json
import os
from pathlib import Path

from artlens.eval.gates import build_gate_bundle, check, gate_result, near_threshold, write_baseline
from artlens.recognition.recognizer import Recognizer

from .conftest import REPO

# Simulated calibration photos per bundle: the CLI's default (every reference up to 200), so the gates judge the
# calibration users get; with fewer photos the fitted curve, and which paintings of a wall verify, differ.
GATE_PHOTOS = 200
# Derived from the variation measured across CPU configurations (each baseline's "variation" block, by
# `python -m artlens.eval.gate_variation`): the verifier's inliers on the real photos were identical in every
# configuration; the calibration's threshold moved by up to 0.4 % here (AVX-512 kernels off; 1.6 % with an earlier
# calibration) and by about 5 % on an AVX2-only EPYC (24 inliers gave confidence 0.471 there, 0.502 here), which
# moved confidences near the threshold by up to 0.031. Each tolerance is at least twice the largest change seen.
GATE_TOLERANCE = {
    "clear_margin": 0.1,  # answers within 0.1 of the threshold are listed, not gated one by one
    "inlier_rel": 0.1, "inlier_abs": 3,  # per expected answer
    "total_rel": 0.05,  # all expected answers' inliers together
    "threshold_inliers_rel": 0.1,  # the calibration's threshold, in inliers
}


def run_gate(name: str, model: Path, data: Path, out: Path, tolerance: dict) -> dict:
    baseline_path = REPO / "eval" / "baselines" / f"{name}-tiny.json"
    bundle = build_gate_bundle(model, data / "collection.csv", out, GATE_PHOTOS)
    result = gate_result(Recognizer(bundle), data / "queries.csv")
    if os.environ.get("ARTLENS_WRITE_BASELINE") == "1":
        write_baseline(baseline_path, result)
    baseline = json.loads(baseline_path.read_text())
    near = near_threshold(result, tolerance["clear_margin"])
    print(f"{name}: {len(near)} expected answers within {tolerance['clear_margin']} of the threshold (not gated one"
          f" by one): " + ", ".join(f"{a['image']} {a['object_id']} {a['confidence']}" for a in near))
    failures = check(result, baseline, tolerance)
    assert not failures, "\n".join(failures)
    assert result["model"]["pretrained"] is False
    return result
