"""Calibrate on one split of labelled photos, report on the other (`artlens calibrate --split`).

The calibration and threshold fitted on the first part are written into the bundle; the second part was never
seen by the fit, so its recall and false-positive rate are what the threshold will do on new photos.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from artlens.calibration.calibrate import calibrate_bundle
from artlens.calibration.queries import labelled_photos
from artlens.calibration.split import split_photos
from artlens.indexing.store.bundle import load_bundle
from artlens.recognition.recognizer import Recognizer

from .evaluate import evaluate_photos


def calibrate_split(bundle: str | Path, queries: str | Path, *, fraction: float = 0.5, seed: int = 0,
                    target_fpr: float = 0.01, top_k: int | None = None, model_dir: str | Path | None = None,
                    progress: Callable[[int, int], None] | None = None, workers: int | None = None,
                    ray_address: str | None = None) -> dict:
    """Fit on ``fraction`` of the labelled photos in ``queries`` (written into ``bundle``), measure the rest."""
    photos = labelled_photos(queries, load_bundle(bundle))
    fit_photos, held_out = split_photos(photos, fraction, seed)
    calibration = calibrate_bundle(bundle, model_dir=model_dir, photos=fit_photos, top_k=top_k,
                                   config={"target_fpr": target_fpr}, progress=progress, lock=True,
                                   workers=workers, ray_address=ray_address)
    report = evaluate_photos(Recognizer(bundle, model_dir), held_out, top_k=top_k, source=f"{queries} (held out)")
    info = calibration.info
    return {
        "bundle": str(bundle), "queries": str(queries), "split": fraction, "seed": seed,
        "threshold": calibration.threshold,
        "fit": {"n_photos": len(fit_photos), "n_match": sum(bool(p.expected) for p in fit_photos),
                "expected_recall": info["expected_recall"], "fpr_at_threshold": info["fpr_at_threshold"],
                "target_fpr": target_fpr},
        "held_out": {"n_photos": len(held_out), "n_match": report["n_match_queries"],
                     "n_nomatch": report["n_nomatch_queries"], "recall": report["recall"],
                     "false_positive_rate": report["false_positive_rate"], "precision": report["precision"],
                     "precision_at_1": report["precision_at_1"]},
    }
