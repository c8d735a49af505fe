"""Calibrate on one split of labelled photos, report on the other (`artlens calibrate --split`).

The photos are split at random (seeded), match and no-match photos separately so both halves hold both
kinds. The calibration and threshold fitted on the first part are written into the bundle; the second part
was never seen by the fit, so its recall and false-positive rate are what the threshold will do on new photos.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.errors import CollectionError
from artlens.indexing.bundle import load_bundle
from artlens.recognition.calibrate import LabelledPhoto, calibrate_bundle
from artlens.recognition.recognizer import Recognizer

from .evaluate import evaluate_photos
from .queries import labelled_photos


def split_photos(photos: list[LabelledPhoto], fraction: float, seed: int
                 ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """(fit, held out): ``fraction`` of the match photos and of the no-match photos go to the fit."""
    if not 0 < fraction < 1:
        raise CollectionError(f"--split must lie strictly between 0 and 1 (got {fraction})")
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for group in ([p for p in photos if p.expected], [p for p in photos if not p.expected]):
        order = rng.permutation(len(group))
        n_fit = round(fraction * len(group))
        fit += [group[i] for i in sorted(order[:n_fit].tolist())]
        held += [group[i] for i in sorted(order[n_fit:].tolist())]
    if not fit or not held:
        raise CollectionError(f"split {fraction} of {len(photos)} photos leaves one side empty")
    return fit, held


def calibrate_split(bundle: str | Path, queries: str | Path, *, fraction: float = 0.5, seed: int = 0,
                    target_fpr: float = 0.01, top_k: int | None = None, model_dir: str | Path | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    photos = labelled_photos(queries, load_bundle(bundle))
    fit, held = split_photos(photos, fraction, seed)
    cal = calibrate_bundle(bundle, model_dir=model_dir, photos=fit, top_k=top_k,
                           config={"target_fpr": target_fpr}, progress=progress)
    report = evaluate_photos(Recognizer(bundle, model_dir), held, top_k=top_k, source=f"{queries} (held out)")
    info = cal.info
    return {
        "bundle": str(bundle), "queries": str(queries), "split": fraction, "seed": seed, "threshold": cal.threshold,
        "fit": {"n_photos": len(fit), "n_match": sum(bool(p.expected) for p in fit),
                "expected_recall": info["expected_recall"], "fpr_at_threshold": info["fpr_at_threshold"],
                "target_fpr": target_fpr},
        "held_out": {"n_photos": len(held), "n_match": report["n_match_queries"],
                     "n_nomatch": report["n_nomatch_queries"], "recall": report["recall"],
                     "false_positive_rate": report["false_positive_rate"], "precision": report["precision"],
                     "precision_at_1": report["precision_at_1"]},
    }
