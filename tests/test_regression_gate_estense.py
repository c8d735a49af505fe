"""Regression gate on the Galleria Estense gallery frames (95 references, 11 frames, several paintings per frame):
the tiny random-init model, default K. Estense has no photos without a match, so wrong answers are gated through
answer precision (each artwork returned that is not in the frame lowers it).

Same gate as tests/test_regression_gate.py (eval/gates.py), baseline eval/baselines/estense-tiny.json. To move it
after a deliberate change: ARTLENS_WRITE_BASELINE=1 pytest tests/test_regression_gate_estense.py, and commit the
JSON with the reason.
"""

from .conftest import ESTENSE, needs_shared
from .gate import GATE_TOLERANCE, run_gate

pytestmark = needs_shared


def test_estense_does_not_regress(tiny_model, tmp_path_factory):
    result = run_gate("estense", tiny_model, ESTENSE, tmp_path_factory.mktemp("gate") / "estense",
                      {**GATE_TOLERANCE, "metrics": {"precision_at_1": 0.1, "answer_precision": 0.05}})
    assert result["n_errors"] == 0 and len({a["image"] for a in result["answers"]}) == 11
