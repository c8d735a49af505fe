"""The `artlens` command as users run it: real bundles, real SMVS photos, malformed inputs, no tracebacks.

Most cases go through ``typer.testing.CliRunner`` (in process, fast); one runs the installed console script
in a subprocess, which is what a user's shell sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from artlens.cli import app

from .badimages import BAD_INPUTS, huge_exif_jpeg, jpeg_bytes
from .conftest import SMVS, needs_shared, write_collection

pytestmark = needs_shared

MATCH_QUERIES = ["001", "007", "015"]  # query photos of paintings in the smvs_bundle subset
NOMATCH_QUERIES = ["landmark-001", "landmark-003"]  # buildings: the answer is "no match"
# The random-init bundle's local shortlist: no model forward, so no "embed" stage.
STAGES = {"decode", "features", "search", "verify", "decide"}


def run(*args: str | Path, env: dict | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream
    # Anything but a clean exit is an exception the CLI let through.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def squeeze(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return "".join(text.split())


def json_objects(text: str) -> list[dict]:
    decoder, objects, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        obj, end = decoder.raw_decode(text, pos)
        objects.append(obj)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return objects


@pytest.fixture(scope="module")
def queries_csv(tmp_path_factory) -> Path:
    rows = [{"image": str(SMVS / "query" / f"{n}.jpg"), "expected": f"smvs-{n}"} for n in MATCH_QUERIES]
    rows += [{"image": str(SMVS / "nomatch" / f"{n}.jpg"), "expected": ""} for n in NOMATCH_QUERIES]
    return write_collection(tmp_path_factory.mktemp("queries") / "queries.csv", rows)


# -- recognize -----------------------------------------------------------------------------------------------
def test_recognize_json_match(smvs_bundle):
    photo = SMVS / "query" / "001.jpg"
    result = run("recognize", "--index", smvs_bundle, photo, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["photo"] == str(photo)
    assert data["status"] == "match"
    best = data["matches"][0]
    assert best["object_id"] == "smvs-001"
    assert best["metadata"] == {"title": "Painting 001"}
    assert best["verified"] is True and best["confidence"] >= data["threshold"]
    assert best["inliers"] >= 20
    assert len(best["outline"]) == 4 and all(len(p) == 2 for p in best["outline"])
    assert all(-0.5 < v < 1.5 for p in best["outline"] for v in p)  # photo coordinates in [0, 1] (± off-frame)
    assert data["best_rejected"] is None
    assert data["model"]["id"] == "artlens/dinov2-tiny" and data["model"]["pretrained"] is False
    assert set(data["timings_ms"]) == STAGES | {"total"}
    assert data["timings_ms"]["total"] > 0
    assert data["image_size"] == [1600, 1200]


def test_recognize_plain_output_warns_about_random_init(smvs_bundle):
    result = run("recognize", "--index", smvs_bundle, SMVS / "query" / "001.jpg")
    assert result.exit_code == 0, result.output
    assert "smvs-001" in result.stdout and "Painting 001" in result.stdout
    assert "random-init" in result.stderr and "pretrained: false" in result.stderr


BAD_CASES = {**{case: (data, message) for case, (data, message) in BAD_INPUTS.items()},
             "missing file": (None, "file not found")}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_recognize_bad_input_exits_2_naming_the_file(smvs_bundle, tmp_path, case):
    data, message = BAD_CASES[case]
    photo = tmp_path / "visitor-photo.jpg"
    if data is not None:
        photo.write_bytes(data)
    result = run("recognize", "--index", smvs_bundle, photo)
    assert result.exit_code == 2, result.output
    stderr = squeeze(result.stderr)
    assert squeeze(f"error: {photo}: ") in stderr and squeeze(message) in stderr


def test_recognize_bad_inputs_as_json(smvs_bundle, tmp_path):
    photos = []
    for i, case in enumerate(sorted(BAD_INPUTS)):
        photo = tmp_path / f"photo-{i}.jpg"
        photo.write_bytes(BAD_INPUTS[case][0])
        photos.append(photo)
    good = SMVS / "query" / "007.jpg"
    result = run("recognize", "--index", smvs_bundle, *photos, tmp_path / "gone.jpg", good, "--json")
    assert result.exit_code == 2  # one bad photo is enough for a non-zero status…
    answers = json_objects(result.stdout)
    assert [a["photo"] for a in answers] == [*map(str, photos), str(tmp_path / "gone.jpg"), str(good)]
    codes = {a["photo"]: a["error"]["code"] for a in answers if "error" in a}
    assert codes == {
        str(photos[sorted(BAD_INPUTS).index("not an image")]): "unsupported_image",
        str(photos[sorted(BAD_INPUTS).index("animated GIF")]): "unsupported_image",
        str(photos[sorted(BAD_INPUTS).index("truncated JPEG")]): "undecodable_image",
        str(photos[sorted(BAD_INPUTS).index("0 bytes")]): "undecodable_image",
        str(photos[sorted(BAD_INPUTS).index("20000x20000 PNG")]): "image_too_large",
        str(tmp_path / "gone.jpg"): "missing_image",
    }
    for a in answers[:-1]:
        assert a["error"]["message"].startswith(f"{a['photo']}: ")
    assert answers[-1]["status"] == "match" and answers[-1]["matches"][0]["object_id"] == "smvs-007"  # …the rest run


@pytest.mark.parametrize("case", ["huge EXIF", "CMYK JPEG"])
def test_recognize_valid_odd_images_succeed(smvs_bundle, tmp_path, case):
    photo = tmp_path / "odd.jpg"
    photo.write_bytes(huge_exif_jpeg() if case == "huge EXIF" else jpeg_bytes(mode="CMYK"))
    result = run("recognize", "--index", smvs_bundle, photo, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "no_match"  # random noise shows no painting
    assert data["image_size"] == [64, 48]


def test_console_script_missing_and_non_image_without_traceback(smvs_bundle, tmp_path):
    script = Path(sys.executable).parent / "artlens"
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello, I am a text file\n" * 10)
    missing = tmp_path / "nowhere.jpg"
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "ARTLENS_DEBUG"}}
    proc = subprocess.run([str(script), "recognize", "--index", str(smvs_bundle), str(missing), str(not_image)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr
    err = squeeze(proc.stderr)
    assert squeeze(f"error: {missing}: file not found") in err
    assert squeeze(f"error: {not_image}: not a recognised image format") in err


def test_recognize_missing_bundle_and_wrong_model(tmp_path, smvs_bundle):
    result = run("recognize", "--index", tmp_path / "no-bundle", SMVS / "query" / "001.jpg")
    assert result.exit_code == 2
    assert squeeze(f"{tmp_path / 'no-bundle'}: not an index bundle") in squeeze(result.stderr)

    result = run("recognize", "--index", smvs_bundle, "--model", tmp_path / "no-model", SMVS / "query" / "001.jpg")
    assert result.exit_code == 2
    assert squeeze(f"{tmp_path / 'no-model'}' not found; pass --model DIR") in squeeze(result.stderr)


# -- index build -----------------------------------------------------------------------------------------------
def test_index_build_missing_collection(tmp_path, tiny_model):
    out = tmp_path / "bundle"
    result = run("index", "build", "--model", tiny_model, "--collection", tmp_path / "nope.csv", "--out", out)
    assert result.exit_code == 2
    assert squeeze(f"error: {tmp_path / 'nope.csv'}: collection CSV not found") in squeeze(result.stderr)
    assert not out.exists()


def test_index_build_missing_model_dir(tmp_path):
    csv_path = write_collection(tmp_path / "c.csv", [{"object_id": "a", "image": str(SMVS / "reference" / "001.jpg")}])
    out = tmp_path / "bundle"
    result = run("index", "build", "--model", tmp_path / "no-model", "--collection", csv_path, "--out", out)
    assert result.exit_code == 2
    stderr = squeeze(result.stderr)
    assert squeeze(f"error: {tmp_path / 'no-model'}: no model.json") in stderr and "--random-init" in stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]


def test_index_build_calibrates_and_reports_skipped_rows(tmp_path, tiny_model):
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg")} for n in ("001", "009", "019")]
    rows.append({"object_id": "gone", "image": "gone.jpg"})
    csv_path = write_collection(tmp_path / "c.csv", rows)
    out = tmp_path / "bundle"
    result = run("index", "build", "--model", tiny_model, "--collection", csv_path, "--out", out,
                 "--calibration-photos", "3")
    assert result.exit_code == 0, result.output
    stderr = squeeze(result.stderr)
    assert squeeze(f"skipped {csv_path}:5:") in stderr and "gone.jpg:filenotfound" in stderr
    assert "3artworks,1skipped" in stderr and "shortlistlocal,noglobalembeddings" in stderr
    assert "pretrained:false" in stderr
    meta = json.loads((out / "bundle.json").read_text())
    assert "3 simulated" in meta["calibration"]["info"]["source"]
    assert 0.0 < meta["calibration"]["threshold"] <= 1.0


# -- eval and bench ----------------------------------------------------------------------------------------------
def test_eval_report(smvs_bundle, queries_csv, tmp_path):
    report_path = tmp_path / "out" / "report.json"
    result = run("eval", "--index", smvs_bundle, "--queries", queries_csv, "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    for key in ("n_queries", "n_match_queries", "n_nomatch_queries", "precision_at_1", "recall", "precision",
                "false_positive_rate", "latency_ms", "model"):
        assert key in report
    assert (report["n_queries"], report["n_match_queries"], report["n_nomatch_queries"]) == (5, 3, 2)
    assert report["n_errors"] == 0
    # The geometric verifier gets all five right with the random-init model: 3 matches, 2 refusals.
    assert report["precision_at_1"] == 1.0
    assert report["recall"] == 1.0
    assert report["precision"] == 1.0
    assert report["false_positive_rate"] == 0.0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"]
    assert set(lat["stages"]) == STAGES and all({"p50", "p95"} <= set(v) for v in lat["stages"].values())
    assert report["model"]["id"] == "artlens/dinov2-tiny" and report["model"]["pretrained"] is False
    answers = {Path(d["image"]).stem: d["answers"] for d in report["details"]}
    assert answers == {"001": ["smvs-001"], "007": ["smvs-007"], "015": ["smvs-015"],
                       "landmark-001": [], "landmark-003": []}
    # One decision per artwork in a photo and per photo of none; the count is recomputed from the details.
    near = report["near_threshold"]
    assert (near["band"], near["of"]) == (0.1, 5)
    decisions = [d["evidence"].get(d["expected"][0], {}).get("confidence", 0.0) if d["expected"]
                 else d["top_confidence"] for d in report["details"]]
    assert near["n"] == sum(abs(c - report["threshold"]) < 0.1 for c in decisions)
    assert "precision_at_1" in result.stdout and "pretrained: false" in result.stdout
    assert "near threshold" in result.stdout


def test_eval_of_a_dataset_folder_builds_its_bundle_once(tiny_model, smvs_collection, queries_csv, tmp_path):
    """`eval --dataset FOLDER`: the bundle is built (and calibrated) under --work the first time, reused after."""
    from artlens.eval.run_eval import EvalConf, EvalHooks, main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "collection.csv").write_text(smvs_collection.read_text())
    (folder / "queries.csv").write_text(queries_csv.read_text())
    work = tmp_path / "work"
    refused = run("eval", "--dataset", folder, "--severity", "real", "--work", work)
    assert refused.exit_code == 2 and "--dataset without --index needs --model DIR" in refused.stderr
    report_path = tmp_path / "report.json"
    result = run("eval", "--dataset", folder, "--severity", "real", "--work", work, "--model", tiny_model,
                 "--json", report_path)
    assert result.exit_code == 0, result.output
    bundle = work / "mine" / f"bundle-{tiny_model.name}"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["calibration"]["threshold"] > 0 and "simulated" in meta["calibration"]["info"]["source"]
    report = json.loads(report_path.read_text())
    assert report["bundle"] == str(bundle) and report["n_queries"] == 5 and report["n_errors"] == 0
    assert "real:" in squeeze(result.stdout) and "precision_at_1" in result.stdout

    phases, labels = [], []

    @contextmanager
    def phase(description):
        phases.append(description)
        yield lambda *args: None

    built = (bundle / "bundle.json").stat().st_mtime_ns
    written = main(EvalConf(dataset=str(folder), severity="real", work=work, model=tiny_model,
                            report_dir=tmp_path / "report"),
                   EvalHooks(phase=phase, report_ready=lambda label, report: labels.append(label)))
    assert phases == ["preparing " + str(folder), "real"] and labels == ["real"]  # no second build
    assert (bundle / "bundle.json").stat().st_mtime_ns == built
    assert written == tmp_path / "report" / "report.json" and json.loads(written.read_text())["title"] == "mine"


def test_bench_report(smvs_bundle, queries_csv, tmp_path):
    bench_path = tmp_path / "bench.json"
    result = run("bench", "recognition", "--index", smvs_bundle, "--queries", queries_csv, "--repeat", "1",
                 "--json", bench_path)
    assert result.exit_code == 0, result.output
    bench = json.loads(bench_path.read_text())
    assert bench["n_photos"] == 5 and bench["repeat"] == 1
    fwd, rec = bench["model_forward_ms"], bench["recognize_ms"]
    assert 0 < fwd["p50"] <= fwd["p95"] and 0 < rec["p50"] <= rec["p95"]
    assert bench["ratio_p50"] == pytest.approx(rec["p50"] / fwd["p50"], rel=1e-3)
    assert set(bench["stages_ms"]) == STAGES  # the bare forward is timed beside recognition, which runs none
    assert bench["shortlist"] == "local" and bench["signals"] == ["local_features", "vlad", "descriptor_votes"]
    assert "ratio_p50" in result.stdout
    # The provider the forward passes ran on, in the JSON and the table's title.
    assert bench["execution_provider"] in bench["machine"]["onnxruntime_providers"]
    assert bench["execution_provider"] in squeeze(result.stdout)


def test_bench_missing_photo_is_a_clear_error(smvs_bundle, tmp_path):
    missing = tmp_path / "gone.jpg"
    queries = write_collection(tmp_path / "q.csv", [{"image": str(SMVS / "query" / "001.jpg"), "expected": ""},
                                                    {"image": str(missing), "expected": ""}])
    result = run("bench", "recognition", "--index", smvs_bundle, "--queries", queries, "--repeat", "1")
    assert result.exit_code == 2
    stderr = squeeze(result.stderr)
    assert squeeze(str(missing)) in stderr and "notfound" in stderr


# -- export ------------------------------------------------------------------------------------------------------
def test_export_without_weights_fails_fast(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "model"
    started = time.perf_counter()
    result = run("export", "dinov2", "--model", "facebook/dinov2-small", "--out", out,
                 env={"HF_HUB_OFFLINE": "1", "ARTLENS_ALLOW_DOWNLOAD": None})
    assert time.perf_counter() - started < 30
    assert result.exit_code == 2, result.output
    assert "--random-init" in result.stderr and "facebook/dinov2-small" in result.stderr
    assert not out.exists()


def test_index_build_of_a_single_artwork_explains_why_it_cannot_calibrate(tiny_model, tmp_path):
    row = {"object_id": "only", "image": str(SMVS / "reference" / "001.jpg")}
    csv_path = write_collection(tmp_path / "one.csv", [row])
    out = tmp_path / "bundle"
    result = run("index", "build", "--model", tiny_model, "--collection", csv_path, "--out", out,
                 "--calibration-photos", "2")
    assert result.exit_code == 2, result.output
    stderr = squeeze(result.stderr)
    assert "atleast2artworks" in stderr and squeeze(str(out)) in stderr and "building" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".bundle.building-*"))
    # Without calibration the bundle is built, and recognition says what is missing.
    assert run("index", "build", "--model", tiny_model, "--collection", csv_path, "--out", out,
               "--no-calibrate").exit_code == 0
    refused = run("recognize", "--index", out, SMVS / "query" / "001.jpg")
    assert refused.exit_code == 2 and "calibrate" in refused.stderr and "Traceback" not in refused.output


def test_serve_with_a_bundle_it_cannot_serve_is_one_line_not_a_traceback(tiny_model, smvs_collection, tmp_path):
    from artlens.indexing.build import build_bundle

    bundle = tmp_path / "uncalibrated"
    build_bundle(tiny_model, smvs_collection, bundle, before_commit=None)
    # An unusable host: were the bundle loaded after all, the server fails to bind instead of serving forever.
    result = run("serve", "--index", bundle, "--host", "256.0.0.1", "--port", "1")
    assert result.exit_code == 2, result.output
    assert "no calibration" in result.output and "Traceback" not in result.output
