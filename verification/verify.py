"""Verify one (photo, reference) pair: match local features, fit a homography, measure the evidence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from artlens.config import with_defaults

from . import geometry, matching
from .features import LocalFeatures, binary_method, matching_space

DEFAULT_CONFIG: dict = {
    "min_matches": 8,
    "matching": matching.DEFAULT_CONFIG,
    "geometry": geometry.DEFAULT_CONFIG,
}


@dataclass(frozen=True)
class Verification:
    """Geometric evidence that a photo shows a reference. ``outline`` is in normalised photo coordinates."""

    matches: int
    inliers: int
    inlier_ratio: float
    homography: np.ndarray | None  # 3×3, reference pixels → photo pixels (analysed resolutions)
    outline: np.ndarray | None  # float [4, 2] corners TL, TR, BR, BL in [0, 1] photo coordinates (may overflow)
    rejected: str | None  # why the geometry was refused, None when it is plausible
    # Fractions of the reference's and of the photo's area that the inliers' convex hulls span: chance inliers
    # gather in a small patch, a real match spreads over the part of the painting in view.
    reference_coverage: float = 0.0
    photo_coverage: float = 0.0
    # Matches whose photo keypoint lies inside the outline: a real match explains most of them (a painting on a
    # wall shares the photo's matches with its neighbours, but not the ones inside its own frame).
    matches_inside: int = 0

    @property
    def plausible(self) -> bool:
        return self.rejected is None and self.homography is not None


def prepare(feats: LocalFeatures) -> np.ndarray:
    """Descriptors in the space they are matched in (done once per photo, reused for every candidate)."""
    return feats.descriptors if binary_method(feats.method) else matching_space(feats.descriptors, feats.method)


def verify(query: LocalFeatures, query_desc: np.ndarray, ref: LocalFeatures, ref_desc: np.ndarray,
           config: dict | None = None) -> Verification:
    cfg = with_defaults(DEFAULT_CONFIG, config)
    match_fn = matching.match_binary if binary_method(query.method) else matching.match_float
    pairs = match_fn(query_desc, ref_desc, cfg["matching"])
    if len(pairs) < cfg["min_matches"]:
        return Verification(len(pairs), 0, 0.0, None, None, "too few matches")
    q_pts = query.keypoints[pairs[:, 0]]
    r_pts = ref.keypoints[pairs[:, 1]]
    H, inl = geometry.estimate_homography(r_pts, q_pts, query.image_size, cfg["geometry"])
    n_inl = int(inl.sum())
    if H is None or n_inl < 4:
        return Verification(len(pairs), n_inl, n_inl / len(pairs), None, None, "no homography")
    extent = geometry.inlier_extent(r_pts[inl], ref.image_size)
    reason = geometry.degeneracy(H, ref.image_size, query.image_size, cfg["geometry"], extent)
    quad = geometry.project_corners(H, ref.image_size) / np.array(query.image_size, dtype=np.float64)
    return Verification(
        matches=len(pairs), inliers=n_inl, inlier_ratio=n_inl / len(pairs),
        homography=H, outline=quad, rejected=reason,
        reference_coverage=geometry.hull_fraction(r_pts[inl], ref.image_size),
        photo_coverage=geometry.hull_fraction(q_pts[inl], query.image_size),
        matches_inside=geometry.points_inside(q_pts, quad * np.array(query.image_size, dtype=np.float64)),
    )
