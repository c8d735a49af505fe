"""Homography by RANSAC (OpenCV's USAC/MAGSAC++) and the checks that reject degenerate ones."""

from __future__ import annotations

import cv2
import numpy as np

from artlens.config import with_defaults

DEFAULT_CONFIG: dict = {
    "method": "magsac",  # magsac (USAC_MAGSAC) | accurate (USAC_ACCURATE) | ransac (classic)
    "threshold": 0.008,  # max reprojection error as a fraction of the photo's longer side
    "max_iters": 2000,
    "confidence": 0.999,
    "min_area": 0.002,  # projected outline must cover at least this fraction of the photo…
    "max_area": 150.0,  # …and at most this (a detail shot of 10% of a painting projects to ~10×)
    "max_side_ratio": 6.0,  # opposite sides of the projected outline: stronger perspective is not a photo
    "max_aspect_change": 5.0,  # outline aspect ratio vs the reference's
}

_METHODS = {"magsac": cv2.USAC_MAGSAC, "accurate": cv2.USAC_ACCURATE, "ransac": cv2.RANSAC}


def estimate_homography(
    ref_pts: np.ndarray, query_pts: np.ndarray, query_size: tuple[int, int], config: dict | None = None
) -> tuple[np.ndarray | None, np.ndarray]:
    """Fit H with ``query ≈ H · ref`` (pixel coordinates). Returns (H or None, boolean inlier mask)."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    n = len(ref_pts)
    if n < 4:
        return None, np.zeros(n, dtype=bool)
    threshold = cfg["threshold"] * max(query_size)
    try:
        H, mask = cv2.findHomography(
            ref_pts.astype(np.float32), query_pts.astype(np.float32), _METHODS[cfg["method"]],
            threshold, maxIters=cfg["max_iters"], confidence=cfg["confidence"],
        )
    except cv2.error:  # degenerate point sets (all collinear, duplicates) make some solvers throw
        return None, np.zeros(n, dtype=bool)
    if H is None or mask is None or not np.all(np.isfinite(H)):
        return None, np.zeros(n, dtype=bool)
    return H, mask.ravel().astype(bool)


def project_corners(H: np.ndarray, ref_size: tuple[int, int]) -> np.ndarray:
    """The reference image's corners (TL, TR, BR, BL) mapped through H, float64 [4, 2]."""
    w, h = ref_size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(corners, H).reshape(4, 2)


def inlier_extent(ref_inliers: np.ndarray, ref_size: tuple[int, int], margin: float = 0.05
                  ) -> tuple[float, float, float, float]:
    """The part of the reference the inliers span (x0, y0, x1, y1), grown by ``margin`` of the reference's size
    and clipped to it: where a homography is supported by data."""
    w, h = ref_size
    if len(ref_inliers) == 0:
        return 0.0, 0.0, float(w), float(h)
    lo = ref_inliers.min(axis=0) - margin * np.array([w, h])
    hi = ref_inliers.max(axis=0) + margin * np.array([w, h])
    return max(0.0, float(lo[0])), max(0.0, float(lo[1])), min(float(w), float(hi[0])), min(float(h), float(hi[1]))


def hull_fraction(points: np.ndarray, size: tuple[int, int]) -> float:
    """The area of the points' convex hull as a fraction of a ``size`` (w, h) image."""
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(points, np.float32).reshape(-1, 1, 2))
    return float(min(1.0, cv2.contourArea(hull) / max(1.0, float(size[0]) * float(size[1]))))


def points_inside(points: np.ndarray, polygon: np.ndarray) -> int:
    """How many points lie inside a polygon given by its corners in order (even-odd rule, vectorised)."""
    poly = np.asarray(polygon, np.float64)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 0 or not np.all(np.isfinite(poly)):
        return 0
    x, y = pts[:, :1], pts[:, 1:]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)  # [N, corners]: the edge spans the point's height
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    inside = np.logical_xor.reduce(crosses & (x < x_at), axis=1)
    return int(inside.sum())


def degeneracy(H: np.ndarray, ref_size: tuple[int, int], query_size: tuple[int, int],
               config: dict | None = None, extent: tuple[float, float, float, float] | None = None) -> str | None:
    """Why H cannot be a photo of a flat artwork (flipped, collapsed, absurd scale), or None if plausible.

    ``extent``: the part of the reference the matches support (``inlier_extent``). The shape checks apply to it,
    not to the whole reference: a close-up of 10–40 % of a canvas extrapolates to the rest of it with errors that
    grow with distance, so a correct detail homography can bend the far corners of the whole canvas into a
    "perspective no photo has" or past the horizon. The scale check scales the matched part's area up to the
    whole reference linearly, for the same reason."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    w, h = ref_size
    x0, y0, x1, y1 = extent if extent is not None else (0.0, 0.0, float(w), float(h))
    if x1 - x0 <= 1e-6 or y1 - y0 <= 1e-6:
        return "matches collapsed to a line"
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    quad = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), H).reshape(4, 2)
    if not np.all(np.isfinite(quad)):
        return "outline goes to infinity"
    # Corners must stay on the camera side of the plane: the projective denominator keeps one sign.
    denom = np.c_[corners, np.ones(4)] @ H[2]
    if not (np.all(denom > 0) or np.all(denom < 0)):
        return "outline crosses the horizon"
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    if np.all(cross < 0):
        return "outline is mirrored"
    if not np.all(cross > 0):
        return "outline is not convex"
    qw, qh = query_size
    rel_area = _area(quad) / float(qw * qh)
    if rel_area < cfg["min_area"]:
        return f"outline collapsed ({rel_area:.4f} of the photo)"
    # The whole reference's size in the photo, scaled up from the matched part linearly: extrapolating the
    # perspective to the far corners would inflate it without bound near the horizon.
    whole_area = rel_area * (w * h) / ((x1 - x0) * (y1 - y0))
    if whole_area > cfg["max_area"]:
        return f"absurd scale (outline {whole_area:.0f}× the photo)"
    sides = np.linalg.norm(edges, axis=1)
    if sides.min() <= 1e-6:
        return "outline collapsed to a line"
    if max(sides[0] / sides[2], sides[2] / sides[0], sides[1] / sides[3], sides[3] / sides[1]) > cfg["max_side_ratio"]:
        return "perspective too strong for a photo"
    ref_aspect = (x1 - x0) / (y1 - y0)
    quad_aspect = (sides[0] + sides[2]) / (sides[1] + sides[3])
    change = max(quad_aspect / ref_aspect, ref_aspect / quad_aspect)
    if change > cfg["max_aspect_change"]:
        return f"aspect ratio changed {change:.1f}×"
    return None


def _area(quad: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(quad[:, 0], np.roll(quad[:, 1], -1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], -1))))
