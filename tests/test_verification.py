"""Geometric verification on real catalogue images under known homographies."""

import cv2
import numpy as np
import pytest

from artlens.imaging import load_image, to_gray
from artlens.verification import extract, prepare, verify
from artlens.verification.geometry import degeneracy, inlier_extent, project_corners

from .conftest import SMVS, needs_shared

pytestmark = needs_shared


def _features(gray):
    f = extract(gray)
    return f, prepare(f)


@pytest.fixture(scope="module")
def painting():
    return to_gray(load_image(SMVS / "reference" / "005.jpg", max_side=800).rgb)


def _warp(gray, H, size):
    return cv2.warpPerspective(gray, H, size, borderMode=cv2.BORDER_CONSTANT, borderValue=200)


def test_recovers_a_known_perspective_outline(painting):
    h, w = painting.shape
    size = (900, 700)
    dst = np.float32([[120, 80], [760, 130], [720, 640], [150, 600]])
    H = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), dst)
    photo = _warp(painting, H, size)
    ref_f, ref_d = _features(painting)
    q_f, q_d = _features(photo)
    v = verify(q_f, q_d, ref_f, ref_d)
    assert v.plausible and v.inliers > 50 and v.inlier_ratio > 0.5
    # q_f was computed at the photo's own resolution (900 px ≤ max_side 800? no: it is downscaled to 800).
    scale = np.array(q_f.image_size) / np.array(size)
    expected = dst * scale / np.array(q_f.image_size)
    assert np.abs(v.outline - expected).max() < 0.02


def test_mirrored_photo_is_rejected(painting):
    ref_f, ref_d = _features(painting)
    mirrored = np.ascontiguousarray(painting[:, ::-1])
    q_f, q_d = _features(mirrored)
    v = verify(q_f, q_d, ref_f, ref_d)
    # SIFT is not mirror-invariant: what survives is a handful of chance matches, not a verified painting.
    assert not v.plausible or v.inliers < 15


def test_unrelated_painting_does_not_verify(painting):
    other = to_gray(load_image(SMVS / "reference" / "040.jpg", max_side=800).rgb)
    ref_f, ref_d = _features(painting)
    q_f, q_d = _features(other)
    v = verify(q_f, q_d, ref_f, ref_d)
    assert v.inliers < 15


def test_degenerate_homographies_are_named():
    ref, photo = (400, 300), (800, 600)
    identity = np.eye(3)
    assert degeneracy(identity, ref, photo) is None
    assert degeneracy(np.diag([-1.0, 1.0, 1.0]) @ np.array([[1, 0, -400], [0, 1, 0], [0, 0, 1.0]]), ref, photo) \
        == "outline is mirrored"
    assert "collapsed" in degeneracy(np.diag([0.01, 0.01, 1.0]), ref, photo)
    assert "absurd scale" in degeneracy(np.diag([40.0, 40.0, 1.0]), ref, photo)
    squeezed = np.diag([3.0, 0.15, 1.0])
    assert "aspect" in degeneracy(squeezed, ref, photo)
    horizon = np.array([[1, 0, 0], [0, 1, 0], [-0.004, 0, 1.0]])  # corner x=400 hits the line at infinity
    assert degeneracy(horizon, ref, photo) in {"outline crosses the horizon", "outline goes to infinity"}


def test_detail_homography_is_judged_where_its_matches_are():
    """A close-up of the left third of a canvas, seen from its left: a correct homography whose extrapolation to
    the far side of the canvas passes the horizon. Judged on the inliers' extent it is plausible; a mirrored one
    stays refused whatever the extent."""
    ref, photo = (1200, 400), (800, 600)
    # The projective term shrinks the canvas towards its right side, as seen from the left: fine over the
    # inliers (x ≤ 400: the far side 1.6× shorter), past the horizon at x = 1111.
    H = np.array([[1.6, 0, 0], [0, 1.5, 0], [-0.0009, 0, 1.0]])
    assert degeneracy(H, ref, photo) is not None  # the whole canvas extrapolated
    inliers = np.float32([[20, 20], [380, 30], [370, 380], [30, 370], [200, 200]])
    extent = inlier_extent(inliers, ref)
    assert extent[2] < 450  # the inliers span the left third
    assert degeneracy(H, ref, photo, extent=extent) is None
    mirrored = np.diag([-1.0, 1.0, 1.0]) @ np.array([[1, 0, -400], [0, 1, 0], [0, 0, 1.0]])
    assert degeneracy(mirrored, ref, photo, extent=extent) == "outline is mirrored"


def test_project_corners_identity():
    quad = project_corners(np.eye(3), (40, 30))
    assert np.allclose(quad, [[0, 0], [40, 0], [40, 30], [0, 30]])


def test_points_inside_counts_like_opencv_for_any_quadrilateral():
    from artlens.verification.geometry import points_inside

    rng = np.random.default_rng(0)
    for _ in range(100):
        quad = rng.uniform(-50, 150, (4, 2))  # convex, concave and self-crossing outlines alike
        points = rng.uniform(-60, 160, (200, 2))
        contour = quad.astype(np.float32).reshape(-1, 1, 2)
        strictly_inside = sum(cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0 for x, y in points)
        on_edge = sum(cv2.pointPolygonTest(contour, (float(x), float(y)), False) == 0 for x, y in points)
        assert abs(points_inside(points, quad) - strictly_inside) <= on_edge
    assert points_inside(np.zeros((0, 2)), quad) == 0
    assert points_inside(points, np.full((4, 2), np.nan)) == 0


def test_evidence_weighs_inliers_against_the_matches_inside_their_outline():
    from artlens.recognition.confidence import Evidence
    from artlens.verification import Verification

    outline = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])

    def vector(inliers: int, inside: int, rejected: str | None = None) -> np.ndarray:
        ver = Verification(200, inliers, inliers / 200, np.eye(3), outline, rejected, matches_inside=inside)
        return Evidence(0, 0, None, ver).vector()

    clean, crowded = vector(15, 16), vector(15, 120)
    assert clean[0] == crowded[0] == pytest.approx(np.log1p(15))
    assert np.isnan(clean[1])
    assert clean[2] == pytest.approx(np.log(16 / 2)) and crowded[2] == pytest.approx(np.log(16 / 106))
    # Without plausible geometry: no inliers, every match against them.
    refused = vector(15, 16, rejected="outline crosses the horizon")
    assert refused[0] == 0 and refused[2] == pytest.approx(np.log(1 / 201))
