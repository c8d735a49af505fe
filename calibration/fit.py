"""The confidence fit: evidence of labelled photos → logistic weights and an operating threshold.

``fit_logistic`` learns weights from labelled (photo, candidate) pairs; ``choose_threshold`` picks the operating
point from per-photo scores of photos whose artwork is *not* among the candidates: every photo serves as such a
photo too, with its correct candidates removed (the wrong candidates a real shortlist holds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from artlens.recognition.confidence import FEATURE_NAMES, Calibration, has_geometry, select_features
from artlens.recognition.recognizer import Recognizer

from .photos import LabelledPhoto

# Below this the calibrated model itself says the answer is more likely wrong than right: never answer there,
# whatever a false-positive target allows.
MIN_THRESHOLD = 0.5

# Per photo: (evidence [n, F], is-correct [n], artwork present, shortlist length).
PhotoEvidence = tuple[np.ndarray, np.ndarray, bool, int]

# Right and wrong candidates nearly separate, so the penalty, not the data, would set how steeply confidence rises
# between chance evidence and clear evidence: "cv" picks it from this grid by held-out log-loss.
L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)  # bounded below: a step, not a curve, is what a near-zero penalty fits
CV_FOLDS = 5


def collect_evidence(recognizer: Recognizer, photos: Iterable[LabelledPhoto], top_k: int,
                     progress: Callable[[int, int], None] | None = None) -> list[PhotoEvidence]:
    """Per photo: (evidence [n, F], is-correct [n], artwork present, shortlist length); rows past the
    shortlist length are correct artworks the shortlist missed."""
    photos = list(photos)
    per_photo = []
    for done, photo in enumerate(photos, start=1):
        analysis = recognizer.analyse(photo.source, top_k=top_k, name=photo.name)
        candidates = [c for c in analysis.candidates if c.row not in photo.related]
        shortlist_length = len(candidates)
        # A shortlist that missed the artwork still teaches what a correct match looks like: verify it too,
        # so the fit sees positives even when the global descriptor is weak (random-init models).
        shortlisted = {c.row for c in analysis.candidates}
        candidates += [recognizer.evidence(analysis, row, top_k + 1)
                       for row in sorted(photo.expected - shortlisted)]
        if candidates:
            evidence = np.stack([c.vector() for c in candidates])
            correct = np.array([c.row in photo.expected for c in candidates])
            per_photo.append((evidence, correct, bool(photo.expected), shortlist_length))
        if progress:
            progress(done, len(photos))
    return per_photo


def fit_calibration(per_photo: list[PhotoEvidence], *, target_fpr: float, l2: float | str, source: str,
                    features: tuple[str, ...] = FEATURE_NAMES) -> Calibration:
    """The logistic fit on every (photo, candidate) pair, and the threshold that meets ``target_fpr``.

    ``l2``: the penalty, or "cv" to choose it from :data:`L2_GRID` by cross-validation over photos."""
    evidence = np.concatenate([photo_evidence for photo_evidence, _, _, _ in per_photo])
    labels = np.concatenate([correct for _, correct, _, _ in per_photo])
    # The curve is fitted where there is geometry to weigh: a correct candidate whose verification failed says
    # nothing about how confident 15 inliers should make us, yet as a point far on the wrong side it would
    # flatten the whole curve. Such candidates get confidence 0 instead (``requires_geometry``).
    geometric = has_geometry(evidence)
    requires_geometry = bool(labels[geometric].any() and not labels[geometric].all())
    fitted = per_photo
    if requires_geometry:
        fitted = [(ev[has_geometry(ev)], ok[has_geometry(ev)], present, n) for ev, ok, present, n in per_photo]
        fitted = [photo for photo in fitted if len(photo[1])]
        evidence, labels = evidence[geometric], labels[geometric]
    cv_losses = None
    if l2 == "cv":
        l2, cv_losses = choose_l2(fitted, features)
    weights, bias, mean, scale = fit_logistic(select_features(evidence, features), labels, l2=float(l2))
    provisional = Calibration(weights, bias, mean, scale, 1.0, {}, features, requires_geometry)
    negative_max, positive_top = [], []
    for photo_evidence, correct, present, shortlist_length in per_photo:
        confidence = provisional.confidence(photo_evidence)
        wrong = confidence[~correct]
        # Every photo also serves as a photo of an absent artwork: its wrong candidates alone.
        negative_max.append(float(wrong.max()) if len(wrong) else 0.0)
        if present:  # what recognition would answer: only the shortlist is verified there
            top = int(np.argmax(confidence[:shortlist_length])) if shortlist_length else -1
            positive_top.append(float(confidence[top]) if top >= 0 and correct[top] else 0.0)
    threshold, stats = choose_threshold(np.array(negative_max), np.array(positive_top), target_fpr)
    info = {"source": source, "n_pairs": len(labels), "n_correct_pairs": int(labels.sum()), "l2": float(l2), **stats}
    if cv_losses is not None:
        info["l2_cv_log_loss"] = cv_losses
    return Calibration(weights, bias, mean, scale, threshold, info, features, requires_geometry)


def choose_l2(per_photo: list[PhotoEvidence], features: tuple[str, ...], grid: tuple[float, ...] = L2_GRID,
              folds: int = CV_FOLDS) -> tuple[float, dict[str, float]]:
    """The penalty of ``grid`` with the lowest log-loss on held-out photos (folds by photo, in order: no shuffle,
    so the choice is reproducible), and each penalty's loss. The largest penalty within 1 % of the best loss
    wins: the smoother curve, and a choice that near-ties computed on other CPUs cannot flip."""
    photos = [(select_features(ev, features), correct) for ev, correct, _, _ in per_photo]
    losses: dict[str, float] = {}
    for l2 in grid:
        total = 0.0
        for fold in range(folds):
            train = [ph for i, ph in enumerate(photos) if i % folds != fold]
            test = [ph for i, ph in enumerate(photos) if i % folds == fold]
            if not test:
                continue
            y_train = np.concatenate([c for _, c in train]) if train else np.zeros(0, bool)
            if y_train.all() or not y_train.any():
                total = np.inf
                break
            weights, bias, mean, scale = fit_logistic(np.concatenate([x for x, _ in train]), y_train, l2=l2)
            x_test = np.concatenate([x for x, _ in test])
            y_test = np.concatenate([c for _, c in test])
            p = 1.0 / (1.0 + np.exp(-np.clip(((x_test - mean) / scale) @ weights + bias, -40, 40)))
            p = np.clip(p, 1e-9, 1 - 1e-9)
            total -= float(np.sum(np.where(y_test, np.log(p), np.log(1 - p))))
        losses[repr(l2)] = round(total, 4) if np.isfinite(total) else None
    finite = {l2: loss for l2 in grid if (loss := losses[repr(l2)]) is not None}
    if not finite:  # too few photos to hold any out: the fixed default
        return 1.0, losses
    best = min(finite.values())
    return max(l2 for l2, loss in finite.items() if loss <= best * 1.01 + 1e-6), losses


def fit_logistic(evidence: np.ndarray, labels: np.ndarray, *, l2: float = 1.0, iters: int = 50
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method (IRLS); features standardised first.

    The penalty keeps weights finite when the classes separate perfectly, which verified matches often do.
    """
    X = np.asarray(evidence, float)
    y = np.asarray(labels, float)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both correct and wrong candidates")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    w = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], l2)
    penalty[-1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -40, 40)))
        grad = Z.T @ (p - y) + penalty * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale


def choose_threshold(negative_max: np.ndarray, positive_top: np.ndarray, target_fpr: float) -> tuple[float, dict]:
    """Lowest threshold whose false-positive rate on photos of absent artworks is ≤ ``target_fpr``.

    ``negative_max``: per photo whose artwork is absent, the highest confidence any candidate got.
    ``positive_top``: per photo whose artwork is present, its confidence if it ranked first, else 0.
    """
    negatives = np.sort(np.asarray(negative_max, float))
    allowed = int(np.floor(target_fpr * len(negatives)))  # how many negatives may lie at or above the threshold
    # Just above the (allowed+1)-th highest negative score.
    edge = negatives[len(negatives) - allowed - 1] if allowed < len(negatives) else 0.0
    threshold = float(max(np.nextafter(edge, 1.0), MIN_THRESHOLD))
    positives = np.asarray(positive_top, float)
    stats = {
        "target_fpr": target_fpr,
        "fpr_at_threshold": float(np.mean(negatives >= threshold)) if len(negatives) else 0.0,
        "expected_recall": float(np.mean(positives >= threshold)) if len(positives) else 0.0,
        "n_negative_photos": len(negatives),
        "n_positive_photos": len(positives),
    }
    return threshold, stats
