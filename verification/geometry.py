"""Homography by RANSAC (OpenCV's USAC/MAGSAC++) and the checks that reject degenerate ones."""

from __future__ import annotations

import cv2
import numpy as np

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
    cfg = {**DEFAULT_CONFIG, **(config or {})}
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


def degeneracy(H: np.ndarray, ref_size: tuple[int, int], query_size: tuple[int, int],
               config: dict | None = None) -> str | None:
    """Why H cannot be a photo of a flat artwork (flipped, collapsed, absurd scale), or None if plausible."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    quad = project_corners(H, ref_size)
    if not np.all(np.isfinite(quad)):
        return "outline goes to infinity"
    # Corners must stay on the camera side of the plane: the projective denominator keeps one sign.
    w, h = ref_size
    corners_h = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64)
    denom = corners_h @ H[2]
    if not (np.all(denom > 0) or np.all(denom < 0)):
        return "outline crosses the horizon"
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    if np.all(cross < 0):
        return "outline is mirrored"
    if not np.all(cross > 0):
        return "outline is not convex"
    qw, qh = query_size
    area = 0.5 * abs(np.dot(quad[:, 0], np.roll(quad[:, 1], -1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], -1)))
    rel_area = area / float(qw * qh)
    if rel_area < cfg["min_area"]:
        return f"outline collapsed ({rel_area:.4f} of the photo)"
    if rel_area > cfg["max_area"]:
        return f"absurd scale (outline {rel_area:.0f}× the photo)"
    sides = np.linalg.norm(edges, axis=1)
    if sides.min() <= 1e-6:
        return "outline collapsed to a line"
    if max(sides[0] / sides[2], sides[2] / sides[0], sides[1] / sides[3], sides[3] / sides[1]) > cfg["max_side_ratio"]:
        return "perspective too strong for a photo"
    ref_aspect = w / h
    quad_aspect = (sides[0] + sides[2]) / (sides[1] + sides[3])
    change = max(quad_aspect / ref_aspect, ref_aspect / quad_aspect)
    if change > cfg["max_aspect_change"]:
        return f"aspect ratio changed {change:.1f}×"
    return None
