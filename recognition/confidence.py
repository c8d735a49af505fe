"""Calibrated confidence, the online side: apply a fitted logistic model to verification evidence.

The evidence of one (photo, candidate) pair is ``[log(1 + RANSAC inliers of a plausible homography),
global-descriptor similarity, inlier log-odds inside the outline]`` (FEATURE_NAMES; why these: docs/benchmarks.md);
the similarity is NaN where the photo was not embedded, which only calibrations without it (RANDOM_INIT_FEATURES)
accept. The fit and the threshold are chosen at build time by ``artlens.calibration.fit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from artlens.verification import Verification

from .results import SegmentRef

FEATURE_NAMES = ("log_inliers", "similarity", "inlier_log_odds")
# A random-init model's similarity is noise (SMVS recall@10 at chance level): fitting on it only learns
# spurious weights, so such bundles calibrate on the geometric evidence alone.
RANDOM_INIT_FEATURES = ("log_inliers", "inlier_log_odds")


@dataclass(frozen=True)
class Calibration:
    weights: np.ndarray  # [F] on standardised features
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    info: dict  # how it was fitted: data, sizes, target FPR, expected recall
    features: tuple[str, ...] = FEATURE_NAMES
    # Fitted on candidates with a plausible homography only; the others get confidence 0.
    requires_geometry: bool = False

    def confidence(self, evidence: np.ndarray) -> np.ndarray:
        """Probability that each row's candidate is the artwork in the photo, in [0, 1]."""
        selected = self.select(evidence)
        if np.isnan(selected).any():  # a feature that was not computed (the similarity of a photo not embedded)
            raise ValueError(f"calibration on {', '.join(self.features)} got evidence without some of them")
        z = ((selected - self.mean) / self.scale) @ self.weights + self.bias
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        return np.where(has_geometry(evidence), p, 0.0) if self.requires_geometry else p

    def to_json(self) -> dict:
        return {"features": list(self.features), "weights": self.weights.tolist(), "bias": self.bias,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "threshold": self.threshold,
                "requires_geometry": self.requires_geometry, "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        features = tuple(data.get("features", []))
        if not features or not set(features) <= set(FEATURE_NAMES) or len(features) != len(data["weights"]):
            raise ValueError(f"calibration features {list(features)} are not a subset of {list(FEATURE_NAMES)}")
        return cls(np.asarray(data["weights"], float), float(data["bias"]), np.asarray(data["mean"], float),
                   np.asarray(data["scale"], float), float(data["threshold"]), dict(data.get("info", {})), features,
                   bool(data.get("requires_geometry", False)))

    def select(self, evidence: np.ndarray) -> np.ndarray:
        return select_features(evidence, self.features)


def has_geometry(evidence: np.ndarray) -> np.ndarray:
    """Per full evidence row (FEATURE_NAMES order): whether its candidate verified with a plausible homography
    (``Evidence.vector`` counts no inliers otherwise, and a plausible homography has at least 4)."""
    return np.atleast_2d(evidence)[:, FEATURE_NAMES.index("log_inliers")] > 0


def select_features(evidence: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    """The columns of full evidence rows (FEATURE_NAMES order) named by ``features``."""
    return np.atleast_2d(evidence)[:, [FEATURE_NAMES.index(f) for f in features]]


@dataclass
class Evidence:
    """One shortlisted candidate before the decision."""

    row: int
    rank: int
    similarity: float | None  # global-descriptor cosine; None where the photo was not embedded
    verification: Verification
    segment: SegmentRef | None = None  # the segment of the reference the photo shows (a detail)

    def vector(self) -> np.ndarray:
        """The evidence the calibration sees (recognition/confidence.py FEATURE_NAMES); a similarity that was not
        computed is NaN (a calibration that reads it refuses it)."""
        ver = self.verification
        inliers = ver.inliers if ver.plausible else 0
        # Chance inliers are a few of many matches that land inside the outline they define; a real match
        # explains most matches inside its outline, whatever else the photo shows.
        inside = ver.matches_inside if ver.plausible else ver.matches
        log_odds = np.log((inliers + 1.0) / (max(inside - inliers, 0) + 1.0))
        similarity = np.nan if self.similarity is None else self.similarity
        return np.array([np.log1p(inliers), similarity, log_odds], dtype=np.float64)
