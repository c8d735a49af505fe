"""`artlens eval`: run recognition over labelled photos and compute the evaluators' metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.calibration.photos import LabelledPhoto
from artlens.calibration.queries import labelled_photos
from artlens.errors import ArtlensError
from artlens.recognition.recognizer import Recognizer


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan")}
    arr = np.asarray(values, float)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3)}


def evaluate(recognizer: Recognizer, queries: str | Path, *, top_k: int | None = None,
             min_confidence: float | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Metrics as defined in README.md#evaluation; per-query details included for debugging."""
    return evaluate_photos(recognizer, labelled_photos(queries, recognizer.bundle), top_k=top_k,
                           min_confidence=min_confidence, progress=progress, source=str(queries))


def evaluate_photos(recognizer: Recognizer, photos: list[LabelledPhoto], *, top_k: int | None = None,
                    min_confidence: float | None = None, progress: Callable[[int, int], None] | None = None,
                    source: str = "") -> dict:
    """:func:`evaluate` on labelled photos already resolved to bundle rows."""
    queries = source
    k = recognizer.settings.shortlist_size(top_k)
    artworks = recognizer.bundle.artworks
    details, totals, stage_times = [], [], {}
    for i, photo in enumerate(photos, start=1):
        try:
            analysis = recognizer.analyse(photo.source, top_k=k, name=photo.name)
        except ArtlensError as exc:
            details.append({"image": photo.name, "error": str(exc), "expected": _ids(photo.expected, artworks)})
            continue
        result = recognizer.decide(analysis, min_confidence=min_confidence)
        # Top-ranked after verification, ignoring the threshold: best confidence over the whole shortlist.
        ranked = recognizer.rank(analysis, result.threshold)
        expected = _ids(photo.expected, artworks)
        answers = [m.object_id for m in result.matches]
        # Shortlist judged on its own (recall@K before verification) and the evidence of the right artwork.
        ranks = [c.rank for c in analysis.candidates if c.row in photo.expected]
        right = [c.verification.inliers for c in analysis.candidates if c.row in photo.expected]
        details.append({
            "image": photo.name, "expected": expected, "answers": answers,
            "top_ranked": ranked[0].object_id if ranked else None,
            "top_confidence": ranked[0].confidence if ranked else 0.0,
            "in_shortlist": bool(ranks),
            "shortlist_rank": min(ranks) if ranks else None,
            "top_inliers": ranked[0].inliers if ranked else 0,
            "expected_inliers": max(right) if right else None,
            # The evidence of each expected artwork that was verified (regression gates check it, not only answers).
            "evidence": {c.object_id: {"inliers": c.inliers, "confidence": c.confidence}
                         for c in ranked if c.object_id in expected},
            "timings_ms": result.timings_ms,
        })
        totals.append(result.timings_ms["total"])
        for stage, ms in result.timings_ms.items():
            if stage != "total":
                stage_times.setdefault(stage, []).append(ms)
        if progress:
            progress(i, len(photos))
    ok = [d for d in details if "error" not in d]
    match_q = [d for d in ok if d["expected"]]
    nomatch_q = [d for d in ok if not d["expected"]]
    answered = [d for d in ok if d["answers"]]
    correct = [d for d in answered if d["answers"][0] in d["expected"]]
    n_expected_objects = sum(len(d["expected"]) for d in match_q)
    found_objects = sum(len(set(d["answers"]) & set(d["expected"])) for d in match_q)
    returned = sum(len(d["answers"]) for d in answered)
    returned_right = sum(len(set(d["answers"]) & set(d["expected"])) for d in answered)
    model = recognizer.model_summary
    return {
        "queries": queries,
        "bundle": str(recognizer.bundle.path),
        "top_k": k,
        "shortlist": recognizer.settings.shortlist_requested,
        "threshold": result.threshold if ok else recognizer.threshold,
        "n_queries": len(details),
        "n_errors": len(details) - len(ok),
        "n_match_queries": len(match_q),
        "n_nomatch_queries": len(nomatch_q),
        "precision_at_1": _ratio(sum(d["top_ranked"] in d["expected"] for d in match_q), len(match_q)),
        "recall": _ratio(sum(bool(d["answers"]) and d["answers"][0] in d["expected"] for d in match_q), len(match_q)),
        "precision": _ratio(len(correct), len(answered)),
        "false_positive_rate": _ratio(sum(bool(d["answers"]) for d in nomatch_q), len(nomatch_q)),
        "object_recall": _ratio(found_objects, n_expected_objects),
        "answer_precision": _ratio(returned_right, returned),
        "shortlist_recall": _ratio(sum(d["in_shortlist"] for d in match_q), len(match_q)),
        "near_threshold": near_threshold(ok, result.threshold if ok else recognizer.threshold),
        "latency_ms": {**percentiles(totals), "stages": {s: percentiles(v) for s, v in stage_times.items()}},
        "model": {"id": model.id, "pretrained": model.pretrained, "sha256": model.sha256},
        "details": details,
    }


NEAR_BAND = 0.1  # a decision whose confidence lies this close to the threshold could flip on another machine


def near_threshold(details: list[dict], threshold: float, band: float = NEAR_BAND) -> dict:
    """How many of the evaluation's decisions sit within ``band`` of the threshold: for each artwork in a photo,
    the confidence of its best candidate (0 when it was not verified); for a photo of no artwork, its top
    candidate's. A confidence that stays away from the threshold is one a small numerical difference cannot flip."""
    confidences = []
    for d in details:
        if d["expected"]:
            confidences += [d["evidence"].get(obj, {}).get("confidence", 0.0) for obj in d["expected"]]
        else:
            confidences.append(d["top_confidence"])
    near = sum(abs(c - threshold) < band for c in confidences)
    return {"band": band, "n": int(near), "of": len(confidences), "share": _ratio(near, len(confidences))}


def _ids(rows, artworks) -> list[str]:
    return sorted(artworks[r]["object_id"] for r in rows)


def _ratio(num: float, den: float) -> float:
    return round(float(num) / den, 4) if den else float("nan")
