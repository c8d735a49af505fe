"""The regression gates' rules (eval/gates.py) on hand-made results: what must fail fails, and an answer that only
crosses the threshold inside the near-threshold band does not."""

import copy

from artlens.eval.gates import check, near_threshold

from .gate import GATE_TOLERANCE

TOL = {**GATE_TOLERANCE, "metrics": {"precision_at_1": 0.03, "false_positive_rate": 0.02, "answer_precision": 0.05}}


def _result(**changes) -> dict:
    result = {
        "metrics": {"precision_at_1": 0.95, "recall": 0.9, "false_positive_rate": 0.0, "object_recall": 0.9,
                    "answer_precision": 1.0},
        "threshold": 0.5, "threshold_inliers": 24.0,
        "answers": [
            {"image": "a.jpg", "object_id": "x", "inliers": 150, "confidence": 0.99, "answered": True},
            {"image": "b.jpg", "object_id": "y", "inliers": 24, "confidence": 0.502, "answered": True},
            {"image": "c.jpg", "object_id": "z", "inliers": 5, "confidence": 0.01, "answered": False},
        ],
    }
    result.update(changes)
    return result


def test_identical_result_passes():
    assert check(_result(), _result(), TOL) == []


def test_answer_at_the_threshold_may_flip():
    now = _result()
    now["answers"][1] = {**now["answers"][1], "confidence": 0.471, "answered": False}
    now["threshold_inliers"] = 25.1  # the calibration moved as much as on an AVX2-only CPU
    assert check(now, _result(), TOL) == []
    assert [a["object_id"] for a in near_threshold(now, TOL["clear_margin"])] == ["y"]


def test_clear_answer_lost_fails():
    now = _result()
    now["answers"][0] = {**now["answers"][0], "confidence": 0.4, "answered": False}
    assert any("clearly answered" in f for f in check(now, _result(), TOL))


def test_weaker_evidence_fails():
    now = copy.deepcopy(_result())
    now["answers"][0]["inliers"] = 120  # answered still, but the verifier lost a fifth of its inliers
    failures = check(now, _result(), TOL)
    assert any("below 132.0" in f for f in failures) and any("total" in f for f in failures)


def test_wrong_answers_and_moved_calibration_fail():
    now = _result(metrics={**_result()["metrics"], "false_positive_rate": 0.04}, threshold_inliers=30.0)
    failures = check(now, _result(), TOL)
    assert any(f.startswith("false_positive_rate") for f in failures)
    assert any(f.startswith("calibration") for f in failures)
