"""Regression gates on real labelled photos that do not flip on one photo crossing a threshold.

A set is evaluated on a bundle built from its collection and compared with a committed baseline
(eval/baselines/*.json) by four rules: no wrong answers, clear answers stay answered, evidence does not weaken, the
calibration stays put. The rules, their tolerances and the variation across CPUs they were measured from:
docs/reproducibility.md ("The regression gates"); ``python -m artlens.eval.gate_variation`` remeasures it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.recognition.recognizer import Recognizer

from .evaluate import evaluate

METRICS = ("precision_at_1", "recall", "false_positive_rate", "object_recall", "answer_precision")
# Metric → the direction that is worse (+1: higher is worse).
WORSE = {"false_positive_rate": 1, "answer_precision": -1, "precision_at_1": -1}


def threshold_inliers(recognizer: Recognizer) -> float | None:
    """Inliers at which a clean match (every match inside its outline an inlier) reaches the threshold, for a
    calibration on geometric evidence alone (random-init models): both of its features are then log(1 + inliers)."""
    cal = recognizer.calibration
    if cal is None or not set(cal.features) <= {"log_inliers", "inlier_log_odds"}:
        return None
    p = min(max(cal.threshold, 1e-9), 1 - 1e-9)
    slope = float(sum(cal.weights / cal.scale))
    offset = float(sum(cal.weights * cal.mean / cal.scale))
    if slope <= 0:
        return None
    log_inliers = (math.log(p / (1 - p)) - cal.bias + offset) / slope
    return round(math.exp(log_inliers) - 1.0, 3)


def build_gate_bundle(model: Path, collection: Path, out: Path, synthetic_photos: int) -> Path:
    build_calibrated_bundle(model, collection, out, calibration={"synthetic_photos": synthetic_photos})
    return out


def gate_result(recognizer: Recognizer, queries: Path) -> dict:
    """The evaluation plus each (photo, expected artwork) pair's evidence."""
    report = evaluate(recognizer, queries)
    answers = []
    for detail in report["details"]:
        for object_id in detail.get("expected", []):
            found = detail.get("evidence", {}).get(object_id)
            answers.append({"image": Path(detail["image"]).name, "object_id": object_id,
                            "inliers": found["inliers"] if found else 0,
                            "confidence": found["confidence"] if found else 0.0,
                            "answered": object_id in detail.get("answers", [])})
    wrong = [(d["top_inliers"], d["top_confidence"]) for d in report["details"]
             if "error" not in d and d["top_ranked"] not in d["expected"]]
    return {"metrics": {k: report[k] for k in METRICS}, "threshold": report["threshold"],
            "threshold_inliers": threshold_inliers(recognizer), "answers": answers,
            "strongest_wrong": max(wrong, default=(0, 0.0)), "n_errors": report["n_errors"],
            "top_k": report["top_k"], "model": report["model"]}


def check(current: dict, baseline: dict, tol: dict) -> list[str]:
    """Every way ``current`` falls short of ``baseline`` by more than the tolerances; empty when the gate passes."""
    failures = []
    for key, worse in WORSE.items():
        then, now = baseline["metrics"].get(key), current["metrics"][key]
        if then is None or math.isnan(then):
            continue
        limit = then + worse * tol["metrics"][key]
        if (now - limit) * worse > 1e-9:
            failures.append(f"{key} {now} is past {limit:.4f} (baseline {then})")
    now_by_key = {(a["image"], a["object_id"]): a for a in current["answers"]}
    total_then = total_now = 0
    for then in baseline["answers"]:
        key = (then["image"], then["object_id"])
        now = now_by_key.get(key)
        if now is None:
            failures.append(f"{key}: the expected answer is missing from the evaluation")
            continue
        if then["answered"] and then["confidence"] >= baseline["threshold"] + tol["clear_margin"] \
                and not now["answered"]:
            failures.append(f"{key}: clearly answered in the baseline (confidence {then['confidence']}, "
                            f"{then['inliers']} inliers), not now (confidence {now['confidence']}, "
                            f"{now['inliers']} inliers)")
        floor = then["inliers"] * (1 - tol["inlier_rel"]) - tol["inlier_abs"]
        if now["inliers"] < floor:
            failures.append(f"{key}: {now['inliers']} inliers, below {floor:.1f} (baseline {then['inliers']})")
        total_then += then["inliers"]
        total_now += now["inliers"]
    if total_now < total_then * (1 - tol["total_rel"]):
        failures.append(f"the expected answers' inliers total {total_now}, below {total_then} × "
                        f"(1 − {tol['total_rel']})")
    then_at, now_at = baseline.get("threshold_inliers"), current.get("threshold_inliers")
    if then_at is not None and now_at is not None and abs(now_at - then_at) > tol["threshold_inliers_rel"] * then_at:
        failures.append(f"calibration: confidence reaches the threshold at {now_at} inliers, more than "
                        f"{tol['threshold_inliers_rel']:.0%} from the baseline's {then_at}")
    return failures


def near_threshold(result: dict, band: float) -> list[dict]:
    """Expected answers whose confidence lies within ``band`` of the threshold: listed, not gated."""
    return [a for a in result["answers"] if abs(a["confidence"] - result["threshold"]) < band]


def write_baseline(path: Path, result: dict) -> None:
    """A new baseline from ``result``; the measured variation recorded in the old one is kept."""
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({
        "metrics": result["metrics"], "threshold": result["threshold"],
        "threshold_inliers": result["threshold_inliers"], "strongest_wrong": result["strongest_wrong"],
        "top_k": result["top_k"], "model": result["model"]["id"], "variation": old.get("variation", {}),
        "answers": result["answers"]}, indent=1) + "\n")
