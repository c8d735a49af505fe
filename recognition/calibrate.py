"""Fit a bundle's confidence calibration and operating threshold from labelled photos.

By default the labelled photos are simulated from the bundle's own references (a visitor's perspective,
framing, light, blur, noise and JPEG), so every bundle ships calibrated without anyone's test photos; with
``artlens calibrate --queries`` real labelled photos are used instead. Photos whose artwork is absent are
the same photos with their artwork removed from the shortlist: the wrong candidates a real shortlist holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from artlens.errors import BundleError
from artlens.indexing.bundle import read_meta, write_meta

from .calibration import FEATURE_NAMES, RANDOM_INIT_FEATURES, Calibration, choose_threshold, fit, select_features
from .recognizer import Recognizer

DEFAULT_CONFIG: dict = {
    "synthetic_photos": 200,  # at most this many references are photographed (all when fewer)
    "seed": 0,
    "target_fpr": 0.01,
    "l2": 1.0,
}


@dataclass
class LabelledPhoto:
    source: str | Path | bytes
    expected: frozenset[int]  # bundle rows that are a correct answer; empty = the artwork is not in the bundle
    name: str


def simulate_visitor_photo(rgb: np.ndarray, rng: np.random.Generator, out_side: int = 1024) -> bytes:
    """A phone photo of ``rgb`` hanging on a wall, as JPEG bytes. Deterministic for a given ``rng`` state."""
    h, w = rgb.shape[:2]
    # How much of the photo's frame the painting spans: log-uniform from a distant view of a gallery wall
    # (0.2) to a detail shot that shows only part of it (up to 2.5× the frame).
    fill = float(np.exp(rng.uniform(np.log(0.2), np.log(2.5 if rng.random() < 0.2 else 0.95))))
    photo_w, photo_h = (out_side, int(out_side * 0.75)) if rng.random() < 0.6 else (int(out_side * 0.75), out_side)
    scale = fill * min(photo_w / w, photo_h / h)
    cw, ch = w * scale, h * scale
    cx = photo_w / 2 + rng.uniform(-0.3, 0.3) * max(photo_w - cw, 0) + rng.uniform(-0.25, 0.25) * min(cw, photo_w)
    cy = photo_h / 2 + rng.uniform(-0.3, 0.3) * max(photo_h - ch, 0) + rng.uniform(-0.25, 0.25) * min(ch, photo_h)
    if rng.random() < 0.25:  # partial framing: the visitor stands close, part of the painting is cut off
        cx += rng.choice([-1, 1]) * rng.uniform(0.2, 0.4) * cw
    jitter = rng.uniform(-0.1, 0.1, size=(4, 2)) * np.array([cw, ch])
    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[-cw / 2, -ch / 2], [cw / 2, -ch / 2], [cw / 2, ch / 2], [-cw / 2, ch / 2]]) + jitter
    dst = (corners @ rot.T + np.array([cx, cy])).astype(np.float32)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    H = cv2.getPerspectiveTransform(src, dst)
    wall = rng.uniform(110, 235) + rng.uniform(-12, 12, size=3)  # muted gallery walls: greys, creams
    photo = cv2.warpPerspective(rgb, H, (photo_w, photo_h), flags=cv2.INTER_AREA,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in wall))
    return phone_effects(photo.astype(np.float32), rng)


def phone_effects(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """What a phone adds to a framed view: white balance, exposure, sometimes spotlight glare, blur, noise and
    JPEG compression. ``img`` is float32 RGB ``[H, W, 3]`` in 0…255 (may be modified in place); returns JPEG
    bytes. Deterministic for a given ``rng`` state.

    Shared by :func:`simulate_visitor_photo` and the detail photos of ``artlens.eval.details``; the order of
    the ``rng`` draws is part of the contract (calibration, and so every bundle's threshold, depends on it).
    """
    photo_h, photo_w = img.shape[:2]
    img *= rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.6, 1.25)  # white balance and exposure
    img += rng.uniform(-20, 20)
    if rng.random() < 0.4:  # glare from a gallery spotlight
        yy, xx = np.mgrid[0:photo_h, 0:photo_w]
        gx, gy, radius = rng.uniform(0, photo_w), rng.uniform(0, photo_h), rng.uniform(0.05, 0.15) * photo_w
        img += rng.uniform(60, 160) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2))[..., None]
    sigma = rng.uniform(0, 1.8)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.normal(0, rng.uniform(1, 7), size=img.shape)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 92))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


def synthetic_photos(recognizer: Recognizer, count: int, seed: int) -> list[LabelledPhoto]:
    from artlens.imaging import load_image
    from artlens.indexing.collection import fetch_bytes, resolve_image

    bundle = recognizer.bundle
    rng = np.random.default_rng(seed)
    n = len(bundle.artworks)
    rows = sorted(rng.choice(n, size=min(count, n), replace=False).tolist())
    csv_path = Path(bundle.meta["collection"]["csv"])
    photos = []
    for row in rows:
        art = bundle.artworks[row]
        rgb = load_image(fetch_bytes(resolve_image(csv_path, art["image"])), name=art["image"], max_side=1600).rgb
        # The same image listed under several ids (prints, duplicates) is a correct answer under each of them.
        same = frozenset(r for r, other in enumerate(bundle.artworks) if other["image"] == art["image"])
        photos.append(LabelledPhoto(simulate_visitor_photo(rgb, rng), same,
                                    f"simulated photo of {art['object_id']}"))
    return photos


PhotoEvidence = tuple[np.ndarray, np.ndarray, bool, int]


def collect_evidence(recognizer: Recognizer, photos: Iterable[LabelledPhoto], top_k: int,
                     progress: Callable[[int, int], None] | None = None) -> list[PhotoEvidence]:
    """Per photo: (evidence [n, F], is-correct [n], artwork present, shortlist length); rows past the
    shortlist length are correct artworks the shortlist missed."""
    photos = list(photos)
    out = []
    for i, photo in enumerate(photos, start=1):
        analysis = recognizer.analyse(photo.source, top_k=top_k, name=photo.name)
        cands = list(analysis.candidates)
        # A shortlist that missed the artwork still teaches what a correct match looks like: verify it too,
        # so the fit sees positives even when the global descriptor is weak (random-init models).
        shortlisted = {c.row for c in cands}
        cands += [recognizer.evidence(analysis, row, top_k + 1) for row in sorted(photo.expected - shortlisted)]
        if cands:
            ev = np.stack([c.vector() for c in cands])
            correct = np.array([c.row in photo.expected for c in cands])
            out.append((ev, correct, bool(photo.expected), len(analysis.candidates)))
        if progress:
            progress(i, len(photos))
    return out


def fit_calibration(per_photo: list[PhotoEvidence], *, target_fpr: float, l2: float, source: str,
                    features: tuple[str, ...] = FEATURE_NAMES) -> Calibration:
    X = np.concatenate([ev for ev, _, _, _ in per_photo])
    y = np.concatenate([c for _, c, _, _ in per_photo])
    weights, bias, mean, scale = fit(select_features(X, features), y, l2=l2)
    provisional = Calibration(weights, bias, mean, scale, 1.0, {}, features)
    negative_max, positive_top = [], []
    for ev, correct, present, n_short in per_photo:
        conf = provisional.confidence(ev)
        wrong = conf[~correct]
        # Every photo also serves as a photo of an absent artwork: its wrong candidates alone.
        negative_max.append(float(wrong.max()) if len(wrong) else 0.0)
        if present:  # what recognition would answer: only the shortlist is verified there
            top = int(np.argmax(conf[:n_short])) if n_short else -1
            positive_top.append(float(conf[top]) if top >= 0 and correct[top] else 0.0)
    threshold, stats = choose_threshold(np.array(negative_max), np.array(positive_top), target_fpr)
    info = {"source": source, "n_pairs": len(y), "n_correct_pairs": int(y.sum()), **stats}
    return Calibration(weights, bias, mean, scale, threshold, info, features)


def calibrate_bundle(bundle_path: str | Path, *, model_dir: str | Path | None = None,
                     photos: list[LabelledPhoto] | None = None, top_k: int | None = None,
                     config: dict | None = None, progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Fit the calibration for the bundle at ``bundle_path`` and write it into its bundle.json."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    recognizer = Recognizer(bundle_path, model_dir, require_calibration=False)
    k = int(top_k or recognizer.config["top_k"])
    source = "labelled photos"
    if photos is None:
        photos = synthetic_photos(recognizer, cfg["synthetic_photos"], cfg["seed"])
        source = f"{len(photos)} simulated visitor photos of the collection (seed {cfg['seed']})"
    per_photo = collect_evidence(recognizer, photos, k, progress)
    labels = np.concatenate([c for _, c, _, _ in per_photo]) if per_photo else np.zeros(0, bool)
    if labels.all() or not labels.any():
        what = "no wrong candidate" if labels.size and labels.all() else "no correct candidate"
        raise BundleError(f"{bundle_path}: cannot calibrate: the {len(photos)} labelled photos gave {what}"
                          f" ({len(recognizer.bundle.artworks)} artwork(s) in the bundle); calibration needs at least"
                          " 2 artworks and photos of some of them")
    features = FEATURE_NAMES if recognizer.embedder.info.pretrained else RANDOM_INIT_FEATURES
    calibration = fit_calibration(per_photo, target_fpr=cfg["target_fpr"], l2=cfg["l2"], source=source,
                                  features=features)
    calibration.info["top_k"] = k
    meta = read_meta(Path(bundle_path))
    meta["calibration"] = calibration.to_json()
    write_meta(Path(bundle_path), meta)
    return calibration
