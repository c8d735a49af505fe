"""Calibration maths: a logistic fit that orders evidence sensibly, and a threshold that honours the FPR target."""

import numpy as np

from artlens.recognition.calibration import MIN_THRESHOLD, Calibration, choose_threshold, fit


def test_fit_orders_evidence_and_stays_finite_on_separable_data():
    rng = np.random.default_rng(0)
    pos = np.column_stack([np.log1p(rng.integers(30, 200, 200)), rng.uniform(0.5, 1.0, 200)])
    neg = np.column_stack([np.log1p(rng.integers(0, 8, 800)), rng.uniform(0.5, 1.0, 800)])
    X = np.vstack([pos, neg])
    y = np.r_[np.ones(200), np.zeros(800)]
    w, b, mean, scale = fit(X, y)
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
