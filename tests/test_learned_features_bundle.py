"""A bundle built with learned local features (XFeat, exported through the real export path) end to end: built by
`artlens index build --features xfeat`, carrying its own copy of the model, recognising real SMVS photos, taking an
admin add, and RootSIFT bundles keeping their own matching; an ALIKED bundle built and recognising the same way.

Each export runs once for the module (about 10 s on 2 cores for XFeat, 15 s for ALIKED), each build of 14 SMVS
paintings once (about 15 s with XFeat, 40 s with ALIKED).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from artlens.cli import app
from artlens.errors import BundleError
from artlens.export.local_features import export_local_features
from artlens.hashing import file_sha256
from artlens.imaging import load_image
from artlens.indexing.incremental import add_artwork
from artlens.indexing.store.bundle import load_bundle
from artlens.local_features import LOCAL_MODEL_DIR, FeatureExtractor
from artlens.local_model import LocalFeatureModel
from artlens.recognition.recognizer import Recognizer
from artlens.recognition.settings import LEARNED_WALLS, resolve_settings
from artlens.recognition.walls import DEFAULT_CONFIG as WALLS_CONFIG
from artlens.verification import matching_space

from .conftest import SMVS, SMVS_SUBSET, needs_shared

pytestmark = needs_shared


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def xfeat_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xfeat") / "model"
    export_local_features("xfeat", out)
    return out


@pytest.fixture(scope="module")
def xfeat_bundle(tmp_path_factory, tiny_model, smvs_collection, xfeat_dir) -> Path:
    # The build reads a copy that is deleted afterwards: the bundle must not need it.
    source = tmp_path_factory.mktemp("source") / "xfeat"
    shutil.copytree(xfeat_dir, source)
    out = tmp_path_factory.mktemp("bundles") / "smvs-xfeat"
    result = run("index", "build", "--model", tiny_model, "--collection", smvs_collection, "--out", out,
                 "--features", "xfeat", "--features-model", source, "--calibration-photos", 14)
    assert result.exit_code == 0, result.output
    shutil.rmtree(source)
    return out


@pytest.fixture(scope="module")
def xfeat_recognizer(xfeat_bundle) -> Recognizer:
    return Recognizer(xfeat_bundle)


def test_the_bundle_records_and_carries_its_model(xfeat_bundle, xfeat_dir):
    meta = json.loads((xfeat_bundle / "bundle.json").read_text())
    features = meta["features"]
    model_json = json.loads((xfeat_dir / "model.json").read_text())
    assert features["config"]["method"] == "xfeat" and "model_dir" not in features["config"]
    assert features["learned"] is True and features["pretrained"] is True
    assert features["model"]["sha256"] == model_json["onnx"]["sha256"] and features["model"]["descriptor_dim"] == 64
    assert features["matching"] == {"ratio": None, "mutual": True}
    assert features["model"]["files"] == [f"{LOCAL_MODEL_DIR}/model.json", f"{LOCAL_MODEL_DIR}/model.onnx"]
    for name in features["model"]["files"]:  # copied in, and checksummed like every other file of the bundle
        assert meta["checksums"][name] == file_sha256(xfeat_bundle / name)
    descriptors = np.load(xfeat_bundle / "features" / "descriptors.npy")
    assert descriptors.dtype == np.uint8 and descriptors.shape == (meta["counts"]["keypoints"], 64)
    assert meta["local_index"]["words"] > 0 and meta["votes"]["dim"] == 64


def test_a_painting_is_recognised_and_a_building_is_not(xfeat_recognizer):
    assert xfeat_recognizer.settings.verify["matching"] == {"ratio": None, "mutual": True}
    assert xfeat_recognizer.settings.walls["hint_inliers"] == LEARNED_WALLS["hint_inliers"]
    result = xfeat_recognizer.recognize(SMVS / "query" / "001.jpg")
    assert result.status == "match" and result.matches[0].object_id == "smvs-001"
    assert result.matches[0].inliers >= 15
    assert result.signals == ["local_features", "learned_features", "vlad", "descriptor_votes"]
    building = xfeat_recognizer.recognize(SMVS / "nomatch" / "landmark-001.jpg")
    assert building.status == "no_match"


def test_quantised_descriptors_keep_their_direction(xfeat_dir):
    rgb = load_image(SMVS / "query" / "003.jpg", max_side=640).rgb
    raw = LocalFeatureModel(xfeat_dir, max_side=640).extract(rgb)
    stored = FeatureExtractor({"method": "xfeat"}, xfeat_dir).extract(rgb)
    assert stored.descriptors.dtype == np.uint8 and np.array_equal(stored.keypoints, raw.keypoints)
    cosine = np.sum(matching_space(stored.descriptors, "xfeat") * raw.descriptors, axis=1)
    assert len(cosine) > 500 and cosine.min() >= 0.999


def test_an_admin_add_is_described_by_the_bundles_model(xfeat_bundle, xfeat_recognizer, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(xfeat_bundle, copy)
    added_id = "smvs-025"
    assert added_id.removeprefix("smvs-") not in SMVS_SUBSET
    bundle = add_artwork(load_bundle(copy), xfeat_recognizer.embedder, added_id,
                         (SMVS / "reference" / "025.jpg").read_bytes(), {})
    assert bundle.features.descriptors.shape[1] == 64 and (copy / LOCAL_MODEL_DIR / "model.onnx").is_file()
    result = Recognizer(bundle, embedder=xfeat_recognizer.embedder).recognize(SMVS / "query" / "025.jpg")
    assert result.status == "match" and result.matches[0].object_id == added_id


def test_a_changed_model_file_in_the_bundle_is_refused(xfeat_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(xfeat_bundle, copy)
    onnx = copy / LOCAL_MODEL_DIR / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"local_model/model\.onnx does not match its checksum"):
        load_bundle(copy)


def test_an_unloadable_model_in_the_bundle_is_a_bundle_error_naming_no_path(xfeat_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(xfeat_bundle, copy)
    (copy / LOCAL_MODEL_DIR / "model.onnx").write_bytes(b"not an onnx graph")
    meta = json.loads((copy / "bundle.json").read_text())
    with pytest.raises(BundleError) as caught:
        FeatureExtractor.for_bundle(meta, copy)
    assert "xfeat local-feature model cannot be loaded" in caught.value.reason
    assert str(tmp_path) not in caught.value.reason and "onnx" not in caught.value.reason.lower()


def test_rootsift_bundles_keep_the_ratio_test(recognizer):
    assert recognizer.settings.verify["matching"]["ratio"] == 0.85
    assert recognizer.settings.walls["hint_inliers"] == WALLS_CONFIG["hint_inliers"] < LEARNED_WALLS["hint_inliers"]
    assert "learned_features" not in recognizer.signals
    # A verify setting given for a learned bundle keeps the bundle's matching under its own keys.
    settings = resolve_settings({"verify": {"min_matches": 12}, "walls": {"hint_inliers": 30}}, pretrained=False,
                                matching={"ratio": None, "mutual": True}, learned_features=True)
    assert settings.verify["matching"]["ratio"] is None and settings.verify["min_matches"] == 12
    assert settings.walls["hint_inliers"] == 30


@pytest.mark.parametrize(("args", "message"), [
    (["--features", "xfeat"], "--features xfeat needs --features-model DIR"),
    (["--features", "aliked"], "`artlens export local-features --model aliked-n16 --out DIR`"),
    (["--features", "surf"], "--features must be one of rootsift"),
    (["--features", "rootsift", "--features-model", "."], "--features-model is for learned features"),
])
def test_feature_options_that_do_not_go_together_are_refused(args, message, tiny_model, smvs_collection, tmp_path):
    result = run("index", "build", "--model", tiny_model, "--collection", smvs_collection, "--out", tmp_path / "b",
                 "--no-calibrate", *args)
    assert result.exit_code != 0 and message in " ".join(result.output.split())
    assert not (tmp_path / "b").exists()


def test_segments_with_learned_features_are_refused_before_any_work(tiny_model, smvs_collection, xfeat_dir,
                                                                    tmp_path):
    result = run("index", "build", "--model", tiny_model, "--collection", smvs_collection, "--out", tmp_path / "b",
                 "--features", "xfeat", "--features-model", xfeat_dir, "--segments", "--sam", tmp_path)
    assert result.exit_code != 0
    assert "segments (--segments) are indexed with RootSIFT local features only" in " ".join(result.output.split())


# -- ALIKED: the same wiring, a second learned method ---------------------------------------------------------------
@pytest.fixture(scope="module")
def aliked_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aliked") / "model"
    export_local_features("aliked-n16", out, max_keypoints=1024)
    return out


@pytest.fixture(scope="module")
def aliked_bundle(tmp_path_factory, tiny_model, smvs_collection, aliked_dir) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "smvs-aliked"
    result = run("index", "build", "--model", tiny_model, "--collection", smvs_collection, "--out", out,
                 "--features", "aliked", "--features-model", aliked_dir, "--calibration-photos", 14)
    assert result.exit_code == 0, result.output
    assert "aliked local features" in " ".join(result.output.split())
    return out


def test_an_aliked_bundle_recognises_a_painting_and_not_a_building(aliked_bundle, aliked_dir):
    meta = json.loads((aliked_bundle / "bundle.json").read_text())
    features = meta["features"]
    assert features["config"]["method"] == "aliked" and features["learned"] is True and features["pretrained"]
    assert features["model"]["descriptor_dim"] == 128 and features["model"]["max_keypoints"] == 1000
    assert features["model"]["sha256"] == json.loads((aliked_dir / "model.json").read_text())["onnx"]["sha256"]
    assert features["matching"] == {"ratio": None, "mutual": True}
    descriptors = np.load(aliked_bundle / "features" / "descriptors.npy")
    assert descriptors.dtype == np.uint8 and descriptors.shape[1] == 128 and meta["votes"]["dim"] == 128
    recognizer = Recognizer(aliked_bundle)
    assert recognizer.settings.walls["hint_inliers"] == LEARNED_WALLS["hint_inliers"]
    result = recognizer.recognize(SMVS / "query" / "001.jpg")
    assert result.status == "match" and result.matches[0].object_id == "smvs-001", result
    assert "learned_features" in result.signals
    assert recognizer.recognize(SMVS / "nomatch" / "landmark-001.jpg").status == "no_match"


def test_a_model_of_another_method_is_refused(tiny_model, smvs_collection, aliked_dir, tmp_path):
    result = run("index", "build", "--model", tiny_model, "--collection", smvs_collection, "--out", tmp_path / "b",
                 "--features", "xfeat", "--features-model", aliked_dir, "--no-calibrate")
    assert result.exit_code != 0
    assert "the local-feature model is 'aliked', the features asked for are 'xfeat'" in " ".join(result.output.split())
    assert not (tmp_path / "b").exists()
