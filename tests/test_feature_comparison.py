"""`artlens bench features` end to end on a tiny real case: six SMVS paintings in a collection folder, three of their
real phone photos and two buildings, and detail photos of the folder's paintings (two more SMVS paintings as the
distractors whose details must get no answer), compared with RootSIFT and XFeat (exported through the real export
path); then `artlens eval --dataset FOLDER --features xfeat` finds the bundle the comparison built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SMVS, needs_shared, write_collection
from .test_cli import run
from .test_learned_features_bundle import xfeat_dir  # noqa: F401 - the module-scoped export, reused

pytestmark = needs_shared

PAINTINGS = ["001", "003", "007", "011", "015", "019"]
PHOTOS = [("query/001.jpg", "smvs-001"), ("query/007.jpg", "smvs-007"), ("query/015.jpg", "smvs-015"),
          ("nomatch/landmark-001.jpg", ""), ("nomatch/landmark-003.jpg", "")]
STAGES = ["decode", "features", "search", "verify", "decide"]



def squeeze(text: str) -> str:
    return " ".join(text.split())


def _rows(numbers: list[str]) -> list[dict]:
    return [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in numbers]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sets") / "mine"
    folder.mkdir()
    write_collection(folder / "collection.csv", _rows(PAINTINGS))
    write_collection(folder / "distractors.csv", _rows(["005", "009"]))
    write_collection(folder / "queries.csv", [{"image": str(SMVS / image), "expected": expected}
                                              for image, expected in PHOTOS])
    return folder


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_model, xfeat_dir, folder):  # noqa: F811
    base = tmp_path_factory.mktemp("comparison")
    work, out = base / "work", base / "out"
    result = run("bench", "features", "--model", tiny_model, "--method", "rootsift", "--method", f"xfeat={xfeat_dir}",
                 "--sets", f"{folder},details", "--details-of", folder, "--details-count", 3, "--details-nomatch", 2,
                 "--calibration-photos", 6, "--work", work, "--out", out)
    assert result.exit_code == 0, result.output
    return work, out, json.loads((out / "comparison.json").read_text()), result


def test_every_set_and_method_gets_a_row_with_the_pipelines_numbers(compared, folder):
    _, _, comparison, _ = compared
    rows = comparison["rows"]
    assert [(r["set"], r["method"]) for r in rows] == [("mine", "rootsift"), ("mine", "xfeat"),
                                                      ("details", "rootsift"), ("details", "xfeat")]
    assert comparison["command"].startswith("artlens bench features --model ")
    assert "--method rootsift --method xfeat=" in comparison["command"]
    assert comparison["machine"]["cores"] and comparison["machine"]["cpu"]
    for row in rows:
        assert row["n_errors"] == 0 and row["errors"] == []
        for key in ("precision_at_1", "recall", "false_positive_rate", "object_recall", "answer_precision"):
            assert 0.0 <= row[key] <= 1.0, (row["set"], row["method"], key)
        assert 0.0 <= row["near_threshold"]["share"] <= 1.0 and row["near_threshold"]["of"] >= row["n_queries"]
        assert list(row["latency_ms"]["stages"]) == STAGES
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"]
        assert row["build"]["artworks"] == len(PAINTINGS) and row["build"]["seconds_per_artwork"] > 0
        assert row["build"]["reused"] is False and "calibration" in row["build"]["stages_s"]
        assert row["feature_bytes_per_artwork"] > 0 and row["features_method"] == row["method"]
    real = [r for r in rows if r["set"] == "mine"]
    assert all((r["n_match_queries"], r["n_nomatch_queries"]) == (3, 2) for r in real)
    # Both methods find the three photographed paintings first, before any threshold.
    assert all(r["precision_at_1"] == 1.0 for r in real)
    details = [r for r in rows if r["set"] == "details"]
    assert all((r["n_match_queries"], r["n_nomatch_queries"]) == (3, 2) for r in details)
    assert all(r["query_set"] == "details of mine" for r in details)


def test_a_learned_bundle_is_really_built_once_per_collection(compared, xfeat_dir):  # noqa: F811
    _, _, comparison, _ = compared
    by_method = {}
    for row in comparison["rows"]:
        by_method.setdefault(row["method"], set()).add(row["bundle"])
    assert all(len(bundles) == 1 for bundles in by_method.values())  # the details reuse the collection's bundle
    xfeat_bundle = Path(next(iter(by_method["xfeat"])))
    assert "xfeat" in xfeat_bundle.name and "xfeat" not in Path(next(iter(by_method["rootsift"]))).name
    meta = json.loads((xfeat_bundle / "bundle.json").read_text())
    model_json = json.loads((xfeat_dir / "model.json").read_text())
    assert meta["features"]["config"]["method"] == "xfeat"
    assert meta["features"]["model"]["sha256"] == model_json["onnx"]["sha256"]
    xfeat_row = next(r for r in comparison["rows"] if r["method"] == "xfeat")
    assert xfeat_row["features"]["sha256"] == model_json["onnx"]["sha256"]
    rootsift_row = next(r for r in comparison["rows"] if r["method"] == "rootsift")
    assert xfeat_row["feature_bytes_per_artwork"] != rootsift_row["feature_bytes_per_artwork"]


def test_the_markdown_has_a_row_per_set_and_method_and_a_stage_table(compared):
    _, out, comparison, result = compared
    markdown = (out / "comparison.md").read_text()
    lines = markdown.splitlines()
    for set_name in ("mine", "details"):
        for method in ("rootsift", "xfeat"):
            assert sum(line.startswith(f"| {set_name} | {method} |") for line in lines) == 2  # accuracy + stages
    assert "| set | method | " + " | ".join(STAGES) + " | total p50 |" in lines
    assert comparison["command"] in markdown and "P@1" in result.stdout


def test_eval_of_the_folder_with_xfeat_finds_the_bundle_the_comparison_built(compared, folder, tiny_model, xfeat_dir,  # noqa: F811
                                                                             tmp_path):
    work, _, comparison, _ = compared
    bundle = Path(next(r["bundle"] for r in comparison["rows"] if r["method"] == "xfeat"))
    built = (bundle / "bundle.json").stat().st_mtime_ns
    report_path = tmp_path / "report.json"
    result = run("eval", "--dataset", folder, "--severity", "real", "--work", work, "--model", tiny_model,
                 "--features", "xfeat", "--features-model", xfeat_dir, "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["bundle"] == str(bundle) and report["n_queries"] == len(PHOTOS)
    assert (bundle / "bundle.json").stat().st_mtime_ns == built


@pytest.mark.parametrize(("spec", "message"), [
    ("surf", "--method 'surf': the method must be one of rootsift"),
    ("xfeat", "a learned method needs its model: --method xfeat=DIR"),
    ("xfeat=", "give the model directory after '='"),
    ("rootsift={model}", "rootsift needs no model directory"),
    ("xfeat={empty}", "no model.json"),
    ("xfeat={model}", "a 'dinov2' model, not local features"),
])
def test_a_bad_method_spec_is_one_clear_line_before_any_work(spec, message, tiny_model, folder, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("bench", "features", "--model", tiny_model, "--method", spec.format(model=tiny_model,
                                                                                     empty=tmp_path / "empty"),
                 "--sets", folder, "--work", tmp_path / "work", "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in squeeze(result.stderr)
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_an_unknown_set_is_refused(tiny_model, tmp_path):
    result = run("bench", "features", "--model", tiny_model, "--method", "rootsift", "--sets", "smvs-museum,nowhere",
                 "--work", tmp_path / "work", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "unknown set 'nowhere'" in squeeze(result.stderr)


@pytest.mark.parametrize(("args", "message"), [
    (["--features", "xfeat"], "--features xfeat needs --features-model DIR"),
    (["--features", "surf"], "--features must be one of rootsift"),
])
def test_eval_with_a_learned_method_and_no_model_fails_with_one_line(args, message, folder, tiny_model, tmp_path):
    result = run("eval", "--dataset", folder, "--severity", "real", "--work", tmp_path / "work", "--model",
                 tiny_model, *args, env={"COLUMNS": "300"})  # a terminal wide enough that nothing wraps
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert not (tmp_path / "work").exists()  # refused before the dataset was prepared


def test_eval_features_need_a_dataset_bundle_to_build(tmp_path, xfeat_dir):  # noqa: F811
    queries = write_collection(tmp_path / "queries.csv", [{"image": str(SMVS / "query/001.jpg"),
                                                           "expected": "smvs-001"}])
    result = run("eval", "--index", tmp_path, "--queries", queries, "--features", "xfeat", "--features-model",
                 xfeat_dir)
    assert result.exit_code == 2 and "give them with --dataset and without --index" in squeeze(result.stderr)
