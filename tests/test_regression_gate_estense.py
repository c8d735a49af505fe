"""Regression gate on the Galleria Estense gallery frames (several paintings per photo): precision@1, object recall
and the precision of every returned answer must not fall below eval/baselines/estense-tiny.json by more than its
margins. Estense has no photos without a match, so wrong answers are gated through answer precision (each artwork
returned that is not in the frame lowers it) instead of a false-positive rate.

Whole Estense collection (95 references, 11 frames), the tiny random-init model, default K. To move the baseline
after a deliberate change: ARTLENS_WRITE_BASELINE=1 pytest tests/test_regression_gate_estense.py, and commit the
JSON with the reason.
"""

import json
import os

import pytest

from artlens.eval.evaluate import evaluate
from artlens.indexing.build import build_bundle
from artlens.recognition.calibrate import calibrate_bundle
from artlens.recognition.recognizer import Recognizer

from .conftest import ESTENSE, REPO, needs_shared

pytestmark = needs_shared
BASELINE = REPO / "eval" / "baselines" / "estense-tiny.json"
GATED = ("precision_at_1", "object_recall", "answer_precision")
MARGIN = {"precision_at_1": 0.1, "object_recall": 0.1, "answer_precision": 0.05}  # one frame of 11 ≈ 0.09


@pytest.fixture(scope="module")
def estense_report(tmp_path_factory, tiny_model) -> dict:
    out = tmp_path_factory.mktemp("gate") / "estense"
    build_bundle(tiny_model, ESTENSE / "collection.csv", out,
                 before_commit=lambda staging: calibrate_bundle(staging, config={"synthetic_photos": 40}))
    return evaluate(Recognizer(out), ESTENSE / "queries.csv")


def test_estense_does_not_regress(estense_report):
    current = {key: estense_report[key] for key in (*GATED, "recall")}
    if os.environ.get("ARTLENS_WRITE_BASELINE") == "1":
        BASELINE.write_text(json.dumps({**current, "margin": MARGIN, "top_k": estense_report["top_k"],
                                        "model": estense_report["model"]["id"]}, indent=2) + "\n")
    baseline = json.loads(BASELINE.read_text())
    for key in GATED:
        assert current[key] >= baseline[key] - baseline["margin"][key], (key, current, baseline)
    assert estense_report["n_errors"] == 0 and estense_report["n_match_queries"] == 11
    assert estense_report["model"]["pretrained"] is False
