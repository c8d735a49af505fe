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
    cal = Calibration(w, b, mean, scale, 0.5, {})
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
        per_photo.append((np.column_stack([inliers, rng.uniform(-1, 1, n)]), correct, bool(i % 3), n))
    without = [(np.column_stack([e[:, 0], np.full(len(e), np.nan)]), c, p, k) for e, c, p, k in per_photo]
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
