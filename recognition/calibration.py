"""Calibrated confidence: logistic regression on verification evidence, fitted on labelled data.

The evidence of one (photo, candidate) pair is ``[log(1 + RANSAC inliers of a plausible homography),
global-descriptor similarity]``. Inlier ratio and coverage were tried as well: they separate simulated photos
perfectly but shift on real ones (clutter, details), and pulled confidence of real 15–40-inlier matches to
≈0.1; the inlier count transfers (docs/benchmarks.md). ``fit`` learns weights from labelled pairs; ``choose_threshold``
picks the operating point from per-photo scores of photos whose artwork is *not* among the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURE_NAMES = ("log_inliers", "similarity")
# A random-init model's similarity is noise (SMVS recall@10 at chance level): fitting on it only learns
# spurious weights, so such bundles calibrate on the geometric evidence alone.
RANDOM_INIT_FEATURES = ("log_inliers",)
# Below this the calibrated model itself says the answer is more likely wrong than right: never answer there,
# whatever a false-positive target allows.
MIN_THRESHOLD = 0.5


@dataclass(frozen=True)
class Calibration:
    weights: np.ndarray  # [F] on standardised features
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    info: dict  # how it was fitted: data, sizes, target FPR, expected recall
    features: tuple[str, ...] = FEATURE_NAMES

    def confidence(self, evidence: np.ndarray) -> np.ndarray:
        """Probability that each row's candidate is the artwork in the photo, in [0, 1]."""
        z = ((self.select(evidence) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def to_json(self) -> dict:
        return {"features": list(self.features), "weights": self.weights.tolist(), "bias": self.bias,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "threshold": self.threshold,
                "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        features = tuple(data.get("features", []))
        if not features or not set(features) <= set(FEATURE_NAMES) or len(features) != len(data["weights"]):
            raise ValueError(f"calibration features {list(features)} are not a subset of {list(FEATURE_NAMES)}")
        return cls(np.asarray(data["weights"], float), float(data["bias"]), np.asarray(data["mean"], float),
                   np.asarray(data["scale"], float), float(data["threshold"]), dict(data.get("info", {})), features)

    def select(self, evidence: np.ndarray) -> np.ndarray:
        return select_features(evidence, self.features)


def select_features(evidence: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    """The columns of full evidence rows (FEATURE_NAMES order) named by ``features``."""
    return np.atleast_2d(evidence)[:, [FEATURE_NAMES.index(f) for f in features]]


def fit(evidence: np.ndarray, labels: np.ndarray, *, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, float,
                                                                                               np.ndarray, np.ndarray]:
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
    neg = np.sort(np.asarray(negative_max, float))
    allowed = int(np.floor(target_fpr * len(neg)))  # how many negatives may lie at or above the threshold
    # Just above the (allowed+1)-th highest negative score.
    edge = neg[len(neg) - allowed - 1] if allowed < len(neg) else 0.0
    threshold = float(max(np.nextafter(edge, 1.0), MIN_THRESHOLD))
    pos = np.asarray(positive_top, float)
    stats = {
        "target_fpr": target_fpr,
        "fpr_at_threshold": float(np.mean(neg >= threshold)) if len(neg) else 0.0,
        "expected_recall": float(np.mean(pos >= threshold)) if len(pos) else 0.0,
        "n_negative_photos": len(neg),
        "n_positive_photos": len(pos),
    }
    return threshold, stats
