"""Regression gate on the real SMVS photos (91 references, 46 phone photos of them, 50 building photos): the tiny
random-init model, so the weight-free shortlist and the geometric verifier are what is gated, at default K.

The gate (eval/gates.py) checks wrong answers against the baseline (eval/baselines/smvs-tiny.json), that every
clearly answered photo is still answered, that the verifier's inliers did not weaken, and that the calibration's
threshold did not move; answers within GATE_TOLERANCE["clear_margin"] of the threshold are listed, not gated.
To move the baseline after a deliberate change: ARTLENS_WRITE_BASELINE=1 pytest tests/test_regression_gate.py, and
commit the JSON with the reason.
"""

import pytest

from .conftest import SMVS, needs_shared
from .gate import GATE_TOLERANCE, run_gate

pytestmark = needs_shared


def test_smvs_does_not_regress(tiny_model, tmp_path_factory):
    result = run_gate("smvs", tiny_model, SMVS, tmp_path_factory.mktemp("gate") / "smvs",
                      {**GATE_TOLERANCE, "metrics": {"precision_at_1": 0.03, "false_positive_rate": 0.02,
                                                     "answer_precision": 0.05}})
    assert result["metrics"]["false_positive_rate"] == pytest.approx(0.0, abs=0.02)
