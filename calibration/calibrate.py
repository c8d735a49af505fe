"""Calibrate a bundle: fit its confidence on labelled photos and write it into its bundle.json.

By default the photos are simulated from the bundle's own references, so every bundle ships calibrated;
``artlens calibrate --queries`` fits on real labelled photos instead. ``build_calibrated_bundle`` is the one
way to build a bundle that is calibrated before it is moved into place.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from artlens.config import with_defaults
from artlens.errors import BundleError
from artlens.indexing.build import BuildReport, Progress, build_bundle
from artlens.indexing.bundle_lock import bundle_lock, signature
from artlens.indexing.bundle_writer import write_meta
from artlens.indexing.ray_build import asked_for_ray, require_ray
from artlens.indexing.store.bundle import read_meta
from artlens.recognition.confidence import FEATURE_NAMES, RANDOM_INIT_FEATURES, Calibration

from .fit import collect_evidence, fit_calibration
from .photos import LabelledPhoto, synthetic_photos
from .ray_evidence import collect_evidence_on_ray, fit_recognizer

DEFAULT_CONFIG: dict = {
    "synthetic_photos": 200,  # at most this many references are photographed (all when fewer)
    "seed": 0,
    "target_fpr": 0.01,
    "l2": "cv",  # a penalty, or "cv": chosen by cross-validation over the photos (calibration/fit.py)
}


def calibrate_bundle(bundle_path: str | Path, *, model_dir: str | Path | None = None,
                     photos: list[LabelledPhoto] | None = None, top_k: int | None = None,
                     config: dict | None = None, progress: Callable[[int, int], None] | None = None,
                     lock: bool = False, workers: int | None = None, ray_address: str | None = None
                     ) -> Calibration:
    """Fit the calibration for the bundle at ``bundle_path`` and write it into its bundle.json. With ``lock`` (a
    bundle that serve processes may write too) the write holds the bundle's exclusive lock, and a bundle that
    another process replaced during the fit is left alone (BundleError): its calibration would be stale.
    ``workers`` > 1 or ``ray_address``: the photos are recognised on Ray (calibration/ray_evidence.py)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    on_ray = None
    if asked_for_ray(workers, ray_address):
        require_ray()  # before any photo is made
        on_ray = "on a Ray cluster" if ray_address is not None else f"on a local Ray, {workers} workers"
    fitted_on = signature(bundle_path)
    recognizer = fit_recognizer(bundle_path, model_dir)
    shortlist_size = recognizer.settings.shortlist_size(top_k)
    source = "labelled photos"
    if photos is None:
        photos = synthetic_photos(recognizer, cfg["synthetic_photos"], cfg["seed"])
        source = f"{len(photos)} simulated visitor photos of the collection (seed {cfg['seed']})"
    artworks, pretrained = len(recognizer.bundle.artworks), recognizer.settings.pretrained
    if on_ray is not None:
        del recognizer  # the actors load their own: a large bundle's vote index is GBs
        per_photo = collect_evidence_on_ray(bundle_path, model_dir, photos, shortlist_size, workers=workers,
                                            address=ray_address, progress=progress)
    else:
        per_photo = collect_evidence(recognizer, photos, shortlist_size, progress)
    labels = np.concatenate([correct for _, correct, _, _ in per_photo]) if per_photo else np.zeros(0, bool)
    if labels.all() or not labels.any():
        what = "no wrong candidate" if labels.size and labels.all() else "no correct candidate"
        raise BundleError(f"{bundle_path}: cannot calibrate: the {len(photos)} labelled photos gave {what}"
                          f" ({artworks} artwork(s) in the bundle); calibration needs at least"
                          " 2 artworks and photos of some of them")
    features = FEATURE_NAMES if pretrained else RANDOM_INIT_FEATURES
    calibration = fit_calibration(per_photo, target_fpr=cfg["target_fpr"], l2=cfg["l2"], source=source,
                                  features=features)
    calibration.info["top_k"] = shortlist_size
    calibration.info["photos_recognised"] = "in process" if on_ray is None else on_ray
    with bundle_lock(bundle_path) if lock else nullcontext():
        if lock and signature(bundle_path) != fitted_on:
            raise BundleError(f"{bundle_path}: another process changed the bundle during calibration; the fit is"
                              " stale and was not written: calibrate again")
        meta = read_meta(Path(bundle_path))
        meta["calibration"] = calibration.to_json()
        write_meta(Path(bundle_path), meta)
    return calibration


def build_calibrated_bundle(model_dir: str | Path, collection_csv: str | Path, out: str | Path, *,
                            config: dict | None = None, calibration: dict | None = None, calibrate: bool = True,
                            strict: bool = False, progress: Progress | None = None,
                            sam_dir: str | Path | None = None, workers: int | None = None,
                            ray_address: str | None = None) -> BuildReport:
    """:func:`artlens.indexing.build.build_bundle`, calibrated (``calibration``: :data:`DEFAULT_CONFIG` keys)
    in its staging directory before the bundle is moved into place; the fit reports as stage "calibration"."""

    def calibrate_staged(staging: Path) -> None:
        fit_progress = None if progress is None else lambda done, total: progress("calibration", done, total)
        try:
            calibrate_bundle(staging, config=calibration, progress=fit_progress, workers=workers,
                             ray_address=ray_address)
        except BundleError as exc:  # name the bundle being built, not its temporary directory
            raise BundleError(str(exc).replace(str(staging), str(out))) from None

    return build_bundle(model_dir, collection_csv, out, config=config, strict=strict, progress=progress,
                        before_commit=calibrate_staged if calibrate else None, sam_dir=sam_dir, workers=workers,
                        ray_address=ray_address)
