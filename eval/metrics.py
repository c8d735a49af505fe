"""Metrics over `evaluate()` details: threshold sweep (PR and FPR–recall curves), GAP, recall@K, inlier counts.

Every photo contributes one prediction: its top-ranked artwork after verification with that candidate's
calibrated confidence. At a threshold t the photo is answered when the confidence is ≥ t. That is what the
recognizer does for its first answer, so the sweep passes through the operating point.
"""

from __future__ import annotations

import numpy as np


def _predictions(details: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, is_correct, has_match) per photo that was processed."""
    ok = [d for d in details if "error" not in d]
    conf = np.array([float(d["top_confidence"]) for d in ok])
    correct = np.array([bool(d["expected"]) and d["top_ranked"] in d["expected"] for d in ok])
    has_match = np.array([bool(d["expected"]) for d in ok])
    return conf, correct, has_match


def threshold_sweep(details: list[dict]) -> dict[str, list[float]]:
    """Recall, precision and false-positive rate at every distinct confidence (plus 0 and just above 1)."""
    conf, correct, has_match = _predictions(details)
    thresholds = np.unique(np.concatenate([conf, [0.0, np.nextafter(1.0, 2.0)]]))
    n_match, n_none = int(has_match.sum()), int((~has_match).sum())
    recall, precision, fpr = [], [], []
    for t in thresholds:
        answered = conf >= t
        recall.append(float((answered & correct).sum() / n_match) if n_match else float("nan"))
        precision.append(float((answered & correct).sum() / answered.sum()) if answered.any() else 1.0)
        fpr.append(float((answered & ~has_match).sum() / n_none) if n_none else float("nan"))
    return {"threshold": [round(float(t), 6) for t in thresholds], "recall": recall, "precision": precision,
            "false_positive_rate": fpr}


def global_average_precision(details: list[dict]) -> float:
    """GAP (micro-AP) as in the Met dataset benchmark (Ypsilantis et al., NeurIPS 2021): one prediction per query,
    distractor queries (no artwork of the collection) included, all ranked by confidence across queries:
    GAP = 1/M · Σ_i P(i)·rel(i), M the number of queries that have a correct answer, P(i) the precision of the top
    i predictions, rel(i) whether prediction i is correct. A confident answer to a distractor lowers every later
    P(i); a match query answered wrongly adds nothing and lowers P(i) too."""
    conf, correct, has_match = _predictions(details)
    m = int(has_match.sum())
    if m == 0:
        return float("nan")
    order = np.argsort(-conf, kind="stable")
    rel = correct[order].astype(float)
    precision_at_i = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return round(float((precision_at_i * rel).sum() / m), 4)


def recall_at_k(details: list[dict], ks: tuple[int, ...] = (1, 5, 10, 20)) -> dict[str, float]:
    """Share of match photos whose artwork is in the shortlist's first k, before verification."""
    match = [d for d in details if "error" not in d and d["expected"]]
    if not match:
        return {}
    return {str(k): round(sum(d["shortlist_rank"] is not None and d["shortlist_rank"] <= k for d in match)
                          / len(match), 4) for k in ks}


def inlier_summary(details: list[dict]) -> dict[str, dict[str, float]]:
    """Distribution of RANSAC inliers: the right artwork's (match photos, when shortlisted) and the top wrong
    candidate's (photos of artworks not in the collection)."""
    right = [d["expected_inliers"] for d in details if "error" not in d and d["expected"]
             and d["expected_inliers"] is not None]
    wrong = [d["top_inliers"] for d in details if "error" not in d and not d["expected"]]

    def summary(values: list[int]) -> dict[str, float]:
        if not values:
            return {"n": 0}
        arr = np.asarray(values, float)
        return {"n": len(values), **{f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (10, 25, 50, 75, 90)},
                "max": float(arr.max())}

    return {"correct": summary(right), "no_match_top": summary(wrong)}


def cross_confusions(details: list[dict]) -> int:
    """Answers above the threshold naming an artwork that is not in the photo (wrong artworks returned),
    counted over all photos: for near-identical copies, a copy returned for another copy."""
    return sum(len(set(d["answers"]) - set(d["expected"])) for d in details if "error" not in d)


def summarise(report: dict) -> dict:
    """The metrics an evaluator compares, added to an `evaluate()` report."""
    details = report["details"]
    return {
        "gap": global_average_precision(details),
        "recall_at_k": recall_at_k(details, tuple(k for k in (1, 5, 10, 20, 50) if k <= report["top_k"])),
        "inliers": inlier_summary(details),
        "wrong_answers": cross_confusions(details),
        "sweep": threshold_sweep(details),
    }
