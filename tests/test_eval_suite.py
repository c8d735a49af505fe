"""The evaluation suite: GAP and the threshold sweep on hand-computed toys, the dataset registry's loaders,
`artlens eval --report` (JSON, markdown, readable PNG plots) and `artlens calibrate --split` on real photos."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from artlens.errors import CollectionError
from artlens.eval.evaluate import near_threshold
from artlens.eval.metrics import global_average_precision, recall_at_k, threshold_sweep
from artlens.eval.registry import REGISTRY, prepare, unraphael_collection

from .conftest import SMVS, needs_shared, write_collection
from .test_cli import run, squeeze


def _d(expected, top, conf, rank=1, answers=None):
    return {"expected": expected, "top_ranked": top, "top_confidence": conf, "shortlist_rank": rank,
            "answers": answers or [], "top_inliers": 0, "expected_inliers": None}


# -- metrics on toys ---------------------------------------------------------------------------------------------
def test_gap_matches_the_hand_computation():
    # Ranked by confidence: q1 right (0.9), distractor (0.8), q2 wrong (0.7), q3 right (0.6), distractor (0.2).
    details = [_d(["a"], "a", 0.9), _d([], "x", 0.8), _d(["b"], "c", 0.7), _d(["d"], "d", 0.6), _d([], "y", 0.2)]
    # P(1) = 1 (rel), P(2) = 1/2, P(3) = 1/3, P(4) = 2/4 (rel): GAP = (1 + 0.5) / M, M = 3 match queries.
    assert global_average_precision(details) == pytest.approx(0.5, abs=1e-4)
    # A perfect ranking with every distractor below every right answer scores 1.
    perfect = [_d(["a"], "a", 0.9), _d(["b"], "b", 0.8), _d([], "x", 0.1)]
    assert global_average_precision(perfect) == 1.0
    # A confident answer to a distractor costs: it now outranks both right answers.
    worse = [_d(["a"], "a", 0.9), _d(["b"], "b", 0.8), _d([], "x", 0.95)]
    assert global_average_precision(worse) == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-4)


def test_sweep_and_recall_at_k():
    details = [_d(["a"], "a", 0.9, rank=1), _d(["b"], "c", 0.7, rank=6), _d(["d"], "d", 0.6, rank=None),
               _d([], "x", 0.8), _d([], "y", 0.2)]
    sweep = threshold_sweep(details)
    at = {t: i for i, t in enumerate(sweep["threshold"])}
    i = at[0.8]  # answered: q1 (right), the 0.8 distractor, the 0.9 one only → recall 1/3, FPR 1/2
    assert (sweep["recall"][i], sweep["false_positive_rate"][i], sweep["precision"][i]) == (1 / 3, 0.5, 0.5)
    i = at[0.0]
    assert sweep["recall"][i] == pytest.approx(2 / 3) and sweep["false_positive_rate"][i] == 1.0
    assert sweep["recall"][-1] == 0.0 and sweep["false_positive_rate"][-1] == 0.0  # above every confidence
    assert recall_at_k(details, (1, 5, 10)) == {"1": round(1 / 3, 4), "5": round(1 / 3, 4), "10": round(2 / 3, 4)}


# -- registry ----------------------------------------------------------------------------------------------------
def test_registry_lists_every_dataset():
    assert {"smvs-museum", "estense", "met-synthetic", "unraphael", "museum-mix"} <= set(REGISTRY)
    result = run("dataset", "list")
    assert result.exit_code == 0
    assert all(name in result.stdout for name in ("smvs-museum", "estense", "met-synthetic", "unraphael"))


def test_unraphael_copies_split_into_collection_and_held_out(tmp_path):
    rows = {}
    for path in unraphael_collection(tmp_path):
        with open(path, encoding="utf-8") as fh:
            rows[path.stem] = list(csv.DictReader(fh))
    assert len(rows["collection"]) == 8 and len(rows["distractors"]) == 3
    ids = [r["object_id"] for part in rows.values() for r in part]
    assert len(set(ids)) == 11 and all(Path(r["image"]).is_file() for part in rows.values() for r in part)
    assert rows["collection"][0]["object_id"] == "raphael-copy-00" and "edinburgh" in rows["collection"][0]["location"]


@needs_shared
@pytest.mark.parametrize("name, n_queries", [("smvs-museum", 96), ("estense", 11)])
def test_shared_loaders_give_the_real_photos(tmp_path, name, n_queries):
    prep = prepare(name, tmp_path, ["real"])
    assert prep.collection.is_file() and set(prep.query_sets) == {"real"}
    assert len(prep.query_sets["real"].read_text().splitlines()) - 1 == n_queries


def test_user_folder_and_unknown_names(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(CollectionError, match=r"collection\.csv"):
        prepare(str(folder), tmp_path / "work", ["real"])
    with pytest.raises(CollectionError, match="unknown dataset 'nope'"):
        prepare("nope", tmp_path / "work", ["real"])
    with pytest.raises(CollectionError, match="unknown severity 'brutal'"):
        prepare("unraphael", tmp_path / "work", ["brutal"])


# -- eval --report and calibrate --split on real photos ------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory) -> Path:
    rows = [{"image": str(SMVS / "query" / f"{n}.jpg"), "expected": f"smvs-{n}"} for n in ("001", "007", "015", "021")]
    rows += [{"image": str(SMVS / "nomatch" / f"landmark-{n}.jpg"), "expected": ""} for n in ("001", "003", "005")]
    return write_collection(tmp_path_factory.mktemp("labelled") / "queries.csv", rows)


@needs_shared
def test_eval_report_writes_json_markdown_and_plots(smvs_bundle, labelled_csv, tmp_path):
    out = tmp_path / "report"
    result = run("eval", "--index", smvs_bundle, "--queries", labelled_csv, "--report", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (r,) = report["runs"]
    assert r["n_match_queries"] == 4 and r["n_nomatch_queries"] == 3
    assert 0.0 <= r["gap"] <= 1.0 and r["gap"] <= r["precision_at_1"] + 1e-9
    assert set(r["recall_at_k"]) == {"1", "5", "10", "20"}
    assert r["sweep"]["recall"][0] >= r["recall"] >= r["sweep"]["recall"][-1]
    assert r["model"]["pretrained"] is False
    md = (out / "report.md").read_text()
    assert "| precision@1 |" in md and "| queries | 4 / 3 |" in md
    assert "pretrained: false" in md and "pr-curve.png" in md
    for name in ("pr-curve.png", "fpr-recall.png", "inliers.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


@needs_shared
def test_calibrate_split_fits_on_one_part_and_reports_the_other(smvs_bundle, labelled_csv, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(smvs_bundle, bundle)
    out = tmp_path / "split.json"
    result = run("calibrate", "--index", bundle, "--queries", labelled_csv, "--split", "0.5", "--seed", "3",
                 "--json", out)
    assert result.exit_code == 0, result.output
    split = json.loads(out.read_text())
    assert split["fit"]["n_photos"] + split["held_out"]["n_photos"] == 7
    assert split["fit"]["n_match"] == 2 and split["held_out"]["n_match"] == 2
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["calibration"]["threshold"] == split["threshold"]
    assert meta["calibration"]["info"]["source"] == "labelled photos"
    assert "heldout3photos" in squeeze(result.stderr)
    bad = run("calibrate", "--index", bundle, "--split", "0.5")
    assert bad.exit_code == 2 and "--split needs --queries" in bad.stderr


def test_near_threshold_counts_each_artwork_of_a_photo_and_the_top_of_a_photo_of_none():
    details = [
        {"expected": ["a", "b"], "evidence": {"a": {"confidence": 0.55}, "b": {"confidence": 0.95}}},  # a is near
        {"expected": ["c"], "evidence": {}},  # c was not verified: confidence 0, far from the threshold
        {"expected": [], "top_confidence": 0.42},  # a photo of no artwork whose top candidate is near
        {"expected": [], "top_confidence": 0.01},
    ]
    assert near_threshold(details, 0.5) == {"band": 0.1, "n": 2, "of": 5, "share": 0.4}
    assert near_threshold(details, 0.5, band=0.04)["n"] == 0
