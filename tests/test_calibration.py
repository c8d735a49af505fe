"""Calibration maths: a logistic fit that orders evidence sensibly, and a threshold that honours the FPR target;
and the one builder of calibrated bundles."""

import numpy as np
import pytest

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.calibration.fit import MIN_THRESHOLD, choose_threshold, fit_logistic
from artlens.errors import BundleError
from artlens.recognition.confidence import Calibration

from .conftest import SMVS, needs_shared, write_collection


def test_fit_orders_evidence_and_stays_finite_on_separable_data():
    rng = np.random.default_rng(0)
    pos = np.column_stack([np.log1p(rng.integers(30, 200, 200)), rng.uniform(0.5, 1.0, 200)])
    neg = np.column_stack([np.log1p(rng.integers(0, 8, 800)), rng.uniform(0.5, 1.0, 800)])
    X = np.vstack([pos, neg])
    y = np.r_[np.ones(200), np.zeros(800)]
    w, b, mean, scale = fit_logistic(X, y)
    assert np.all(np.isfinite(w)) and w[0] > 0  # more inliers, more confidence
    cal = Calibration(w, b, mean, scale, 0.5, {}, ("log_inliers", "similarity"))
    conf = cal.confidence(X)
    assert conf[:200].min() > conf[200:].max()  # separable evidence stays separated
    assert np.median(conf[:200]) > 0.95 and np.median(conf[200:]) < 0.05
    assert Calibration.from_json(cal.to_json()).confidence(X[:3]).tolist() == conf[:3].tolist()


def test_threshold_meets_fpr_target_and_never_drops_below_even_odds():
    neg = np.linspace(0.0, 0.99, 100)  # one negative photo at each score
    pos = np.full(50, 0.995)
    thr, stats = choose_threshold(neg, pos, target_fpr=0.02)
    assert stats["fpr_at_threshold"] <= 0.02 and thr > 0.97
    assert stats["expected_recall"] == 1.0
    thr_low, _ = choose_threshold(np.zeros(100), pos, target_fpr=0.01)
    assert thr_low == MIN_THRESHOLD


def test_calibration_on_a_subset_of_features():
    cal = Calibration(np.array([2.0]), -1.0, np.zeros(1), np.ones(1), 0.5, {}, ("log_inliers",))
    rows = np.array([[0.0, 0.9], [3.0, 0.1]])
    assert cal.confidence(rows)[0] < 0.5 < cal.confidence(rows)[1]  # similarity column ignored
    assert Calibration.from_json(cal.to_json()).features == ("log_inliers",)


def test_random_init_fit_never_reads_the_similarity_and_a_missing_one_is_refused_where_read():
    """A random-init bundle is fitted on inliers alone: evidence whose similarity was never computed (NaN: the photo
    was not embedded) gives the very calibration that any similarity values give. A calibration that does read
    the similarity refuses evidence without it rather than answering NaN."""
    from artlens.calibration.fit import fit_calibration
    from artlens.recognition.confidence import FEATURE_NAMES, RANDOM_INIT_FEATURES

    rng = np.random.default_rng(1)
    per_photo = []
    for i in range(60):
        n = 6
        inliers = np.log1p(rng.integers(0, 10, n)).astype(float)
        correct = np.zeros(n, bool)
        if i % 3:  # two photos in three show an artwork of the bundle, found with many inliers
            inliers[0], correct[0] = np.log1p(rng.integers(15, 120)), True
        log_odds = inliers - np.log1p(rng.integers(0, 20, n))
        per_photo.append((np.column_stack([inliers, rng.uniform(-1, 1, n), log_odds]), correct, bool(i % 3), n))
    without = [(np.column_stack([e[:, 0], np.full(len(e), np.nan), e[:, 2]]), c, p, k) for e, c, p, k in per_photo]
    fitted = [fit_calibration(photos, target_fpr=0.01, l2=1.0, source="test", features=RANDOM_INIT_FEATURES)
              for photos in (per_photo, without)]
    assert fitted[0].to_json() == fitted[1].to_json()
    assert np.all(np.isfinite(fitted[1].confidence(without[0][0])))
    with_similarity = fit_calibration(per_photo, target_fpr=0.01, l2=1.0, source="test", features=FEATURE_NAMES)
    with pytest.raises(ValueError, match="without some of them"):
        with_similarity.confidence(without[0][0])


@needs_shared
def test_a_bundle_that_cannot_be_calibrated_is_named_by_its_destination(tmp_path, tiny_model):
    rows = [{"object_id": "only", "image": str(SMVS / "reference" / "001.jpg")}]
    out = tmp_path / "bundle"
    stages = []
    with pytest.raises(BundleError) as failure:
        build_calibrated_bundle(tiny_model, write_collection(tmp_path / "c.csv", rows), out,
                                calibration={"synthetic_photos": 1},
                                progress=lambda stage, done, total: stages.append(stage))
    message = str(failure.value)
    assert message.startswith(f"{out}: cannot calibrate") and ".bundle.building-" not in message
    assert "calibration" in stages and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.csv"]  # the staging directory is gone too


def _photos(rng: np.random.Generator, n_photos: int, failed_positives: int = 0) -> list:
    """Simulated per-photo evidence: wrong candidates with chance inliers, one correct candidate per photo with
    many; ``failed_positives`` photos whose correct candidate did not verify (no plausible geometry: 0 inliers)."""
    per_photo = []
    for i in range(n_photos):
        inliers = rng.integers(0, 8, 8).astype(float)
        inliers[inliers < 4] = 0  # fewer than 4 inliers is no homography
        correct = np.zeros(8, bool)
        correct[0] = True
        inliers[0] = 0 if i < failed_positives else rng.integers(12, 150)
        inside = inliers + rng.integers(0, 3, 8) * (inliers > 0) + rng.integers(5, 30, 8) * ~correct
        log_odds = np.log((inliers + 1) / (np.maximum(inside - inliers, 0) + 1))
        evidence = np.column_stack([np.log1p(inliers), np.full(8, np.nan), log_odds])
        per_photo.append((evidence, correct, True, 8))
    return per_photo


def test_correct_candidates_that_did_not_verify_do_not_flatten_the_curve():
    """The fit weighs candidates with a plausible homography only: a correct candidate that failed to verify says
    nothing about how sure a clean 15-inlier match is, so adding such photos leaves the fitted curve as it was; rows
    without geometry get confidence 0."""
    from artlens.calibration.fit import fit_calibration
    from artlens.recognition.confidence import RANDOM_INIT_FEATURES

    clean = _photos(np.random.default_rng(2), 80)
    with_failures = _photos(np.random.default_rng(2), 80, failed_positives=0) + \
        _photos(np.random.default_rng(3), 10, failed_positives=10)
    fits = [fit_calibration(photos, target_fpr=0.01, l2=1.0, source="t", features=RANDOM_INIT_FEATURES)
            for photos in (clean, with_failures)]
    assert all(fit.requires_geometry for fit in fits)
    row = np.array([[np.log1p(15), np.nan, np.log(16 / 2)]])  # 15 inliers of 16 matches inside the outline
    assert abs(fits[0].confidence(row)[0] - fits[1].confidence(row)[0]) < 0.05
    assert fits[1].confidence(np.array([[0.0, np.nan, 0.0]]))[0] == 0.0
    # A calibration written before the flag existed reads as fitted on every candidate.
    legacy = fits[1].to_json()
    del legacy["requires_geometry"]
    assert Calibration.from_json(legacy).requires_geometry is False
    assert Calibration.from_json(fits[1].to_json()).requires_geometry is True


def test_cross_validated_penalty_is_recorded_and_prefers_the_smoother_curve_on_near_ties():
    from artlens.calibration.fit import L2_GRID, choose_l2, fit_calibration
    from artlens.recognition.confidence import RANDOM_INIT_FEATURES

    photos = _photos(np.random.default_rng(4), 60)
    l2, losses = choose_l2(photos, RANDOM_INIT_FEATURES)
    assert l2 in L2_GRID and set(losses) == {repr(g) for g in L2_GRID}
    best = min(v for v in losses.values() if v is not None)
    assert losses[repr(l2)] <= best * 1.01 + 1e-6
    assert all(losses[repr(g)] > best * 1.01 for g in L2_GRID if g > l2)  # no larger penalty was as good
    fit = fit_calibration(photos, target_fpr=0.01, l2="cv", source="t", features=RANDOM_INIT_FEATURES)
    assert fit.info["l2"] in L2_GRID and set(fit.info["l2_cv_log_loss"]) == set(losses)
    # Too few photos to hold any out with both classes in training: the fixed default.
    assert choose_l2(photos[:1], RANDOM_INIT_FEATURES)[0] == 1.0
