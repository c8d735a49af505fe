"""artlens.export: DINOv2 → ONNX + model.json as docs/model-contract.md says, checked end to end.

Everything runs on the test-only architecture ``artlens/dinov2-tiny`` (48 wide, 2 layers), so the whole file
takes seconds on a CPU and needs no model hub.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

from artlens.errors import ArtlensError  # noqa: E402
from artlens.export import ExportError, export_dinov2  # noqa: E402
from artlens.export.graph import Dinov2Tokens, aa_bicubic_matrix, bicubic_matrix  # noqa: E402
from artlens.export.loading import load_dinov2  # noqa: E402

TINY = "artlens/dinov2-tiny"
TINY_REGISTERS = "artlens/dinov2-with-registers-tiny"
SHAPES = [(1, 224, 224), (3, 168, 308)]  # (batch, height, width): square native size, non-square resized


def _inputs(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width), dtype=np.float32)


def _session(model_dir: Path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_dir / "model.onnx"), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _run(model_dir: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cls, patches = _session(model_dir).run(None, {"pixel_values": x})
    return cls, patches


def _torch_tokens(model: str, x: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_dinov2(model, **kw)
    wrapper = Dinov2Tokens(loaded.model, loaded.num_register_tokens).eval()
    with torch.no_grad():
        cls, patches = wrapper(torch.from_numpy(x))
    return cls.numpy(), patches.numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "tiny"
    meta = export_dinov2(TINY, out, random_init=True, seed=0)
    return out, meta


# -- the bundle ----------------------------------------------------------------------------------------------
def test_model_json_follows_the_contract(tiny):
    out, meta = tiny
    assert json.loads((out / "model.json").read_text()) == meta
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert meta["format"] == "artlens-model/1" and meta["kind"] == "dinov2"
    assert meta["source"] == TINY
    assert meta["pretrained"] is False and meta["seed"] == 0
    expected = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3, "patch_size": 14,
                "num_register_tokens": 0, "use_swiglu_ffn": False}
    assert {k: meta["architecture"][k] for k in expected} == expected
    assert meta["embedding_dim"] == 48
    assert meta["input"] == {"size": 224, "geometry": "squash", "patch_size": 14,
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert meta["pooling"] == "gem"
    onnx_meta = meta["onnx"]
    assert {k: onnx_meta[k] for k in ("file", "opset", "precision", "input", "outputs")} == {
        "file": "model.onnx", "opset": 17, "precision": "fp32", "input": "pixel_values",
        "outputs": ["cls_token", "patch_tokens"]}
    assert onnx_meta["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    parity = meta["parity"]
    assert parity["tolerance"] == 1e-3 and 0 <= parity["max_abs_diff"] < 1e-4
    assert parity["inputs"] == "2 random batches, 2 sizes"
    assert set(meta["versions"]) >= {"torch", "transformers", "onnx"}
    assert meta["created"].endswith("Z")


def test_onnx_io_names_and_dynamic_axes(tiny):
    out, _ = tiny
    session = _session(out)
    (inp,) = session.get_inputs()
    assert inp.name == "pixel_values" and inp.type == "tensor(float)"
    assert inp.shape[1] == 3 and all(isinstance(d, str) for d in (inp.shape[0], inp.shape[2], inp.shape[3]))
    assert [o.name for o in session.get_outputs()] == ["cls_token", "patch_tokens"]


@pytest.mark.parametrize(("batch", "height", "width"), SHAPES)
def test_onnx_matches_torch_at_any_batch_and_size(tiny, batch, height, width):
    out, _ = tiny
    x = _inputs(batch, height, width)
    cls, patches = _run(out, x)
    ref_cls, ref_patches = _torch_tokens(TINY, x, random_init=True, seed=0)
    assert cls.shape == (batch, 48) and cls.dtype == np.float32
    assert patches.shape == (batch, (height // 14) * (width // 14), 48)
    np.testing.assert_allclose(cls, ref_cls, atol=1e-4)
    np.testing.assert_allclose(patches, ref_patches, atol=1e-4)


def test_same_seed_same_numbers_other_seed_other_numbers(tiny, tmp_path):
    out, meta = tiny
    x = _inputs(*SHAPES[1])
    again = export_dinov2(TINY, tmp_path / "again", random_init=True, seed=0)
    other = export_dinov2(TINY, tmp_path / "other", random_init=True, seed=1)
    assert other["seed"] == 1
    for a, b in zip(_run(out, x), _run(tmp_path / "again", x), strict=True):
        assert np.array_equal(a, b)
    assert again["onnx"]["sha256"] == meta["onnx"]["sha256"]
    assert not np.allclose(_run(out, x)[0], _run(tmp_path / "other", x)[0])
    assert other["onnx"]["sha256"] != meta["onnx"]["sha256"]


def test_registers_are_dropped_and_antialiased_resize_matches(tmp_path):
    meta = export_dinov2(TINY_REGISTERS, tmp_path / "reg", random_init=True, seed=3)
    assert meta["architecture"]["num_register_tokens"] == 4 and meta["architecture"]["use_swiglu_ffn"]
    x = _inputs(*SHAPES[1])
    cls, patches = _run(tmp_path / "reg", x)
    ref_cls, ref_patches = _torch_tokens(TINY_REGISTERS, x, random_init=True, seed=3)
    assert patches.shape == (3, 12 * 22, 48)
    np.testing.assert_allclose(cls, ref_cls, atol=1e-4)
    np.testing.assert_allclose(patches, ref_patches, atol=1e-4)


@pytest.mark.parametrize("out_size", [1, 5, 12, 16, 22, 37, 46, 80])
def test_position_embedding_resize_matrices_equal_torch_interpolate(out_size):
    grid = torch.randn(1, 4, 37, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(out_size))
    for antialias, matrix in ((False, bicubic_matrix), (True, aa_bicubic_matrix)):
        ref = torch.nn.functional.interpolate(grid, size=(out_size, 37), mode="bicubic", align_corners=False,
                                              antialias=antialias)
        rows = matrix(37, out_size).double()
        assert rows.shape == (out_size, 37)
        torch.testing.assert_close(rows @ grid, ref, atol=1e-4, rtol=0)


# -- precision -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_runs_with_float32_io(tiny, tmp_path, precision):
    out, _ = tiny
    meta = export_dinov2(TINY, tmp_path / precision, random_init=True, seed=0, precision=precision)
    assert meta["onnx"]["precision"] == precision
    parity = meta["parity"]
    assert parity["tolerance"] > 1e-3 and parity["max_abs_diff"] <= parity["tolerance"]
    assert min(parity["min_cosine"].values()) >= parity["min_cosine_required"]
    assert parity["fp32_max_abs_diff"] < 1e-4
    session = _session(tmp_path / precision)
    assert session.get_inputs()[0].type == "tensor(float)"
    for batch, height, width in SHAPES:
        x = _inputs(batch, height, width)
        cls, patches = session.run(None, {"pixel_values": x})
        ref_cls, ref_patches = _run(out, x)
        assert cls.dtype == np.float32 and patches.shape == ref_patches.shape
        cos = (cls * ref_cls).sum(1) / np.linalg.norm(cls, axis=1) / np.linalg.norm(ref_cls, axis=1)
        assert cos.min() > 0.99


def test_external_data_layout_for_big_models(tmp_path, monkeypatch):
    # DINOv2-giant is over protobuf's 2 GB: weights go to model.onnx.data. Force that path on the tiny model.
    from artlens.export import graph

    monkeypatch.setattr(graph, "_PROTO_LIMIT", 0)
    out = tmp_path / "big"
    meta = export_dinov2(TINY, out, random_init=True, seed=0, precision="fp16")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "model.onnx.data"]
    external = meta["onnx"]["external_data"]
    assert external["file"] == "model.onnx.data"
    assert external["sha256"] == hashlib.sha256((out / "model.onnx.data").read_bytes()).hexdigest()
    cls, patches = _run(out, _inputs(*SHAPES[1]))
    assert cls.shape == (3, 48) and patches.shape == (3, 264, 48)
    export_dinov2(TINY, out, random_init=True, seed=1, precision="fp16")  # an earlier bundle is replaceable


# -- where weights come from ---------------------------------------------------------------------------------
def test_local_directory_with_weights_is_pretrained(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(7)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=14,
                          image_size=126)
    model = Dinov2Model(config)
    model.save_pretrained(tmp_path / "weights")
    meta = export_dinov2(str(tmp_path / "weights"), tmp_path / "out", size=126)
    assert meta["pretrained"] is True and meta["seed"] is None and meta["weights"] == "local-dir"
    assert meta["source"] == str((tmp_path / "weights").resolve())
    assert meta["embedding_dim"] == 32
    x = _inputs(2, 126, 182)
    with torch.no_grad():
        hidden = model.eval()(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    cls, patches = _run(tmp_path / "out", x)
    np.testing.assert_allclose(cls, hidden[:, 0], atol=1e-4)
    np.testing.assert_allclose(patches, hidden[:, 1:], atol=1e-4)


def _assert_helpful(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, ArtlensError)
    for fragment in ("--model DIR", "--random-init", *fragments):
        assert fragment in message, message


@pytest.mark.parametrize("model_id", ["facebook/dinov2-small", "someone/no-such-model"])
def test_hub_id_offline_fails_fast_and_says_what_to_do(tmp_path, monkeypatch, model_id):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ARTLENS_ALLOW_DOWNLOAD", raising=False)
    started = time.perf_counter()
    with pytest.raises(ExportError) as err:
        export_dinov2(model_id, tmp_path / "out")
    assert time.perf_counter() - started < 10
    _assert_helpful(err, model_id)
    assert not (tmp_path / "out").exists()


def test_allowed_download_without_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTLENS_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens, refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ExportError) as err:
        export_dinov2("someone/no-such-model", tmp_path / "out")
    assert time.perf_counter() - started < 10
    _assert_helpful(err, "cannot be reached")


def test_missing_or_incomplete_local_directory(tmp_path):
    with pytest.raises(ExportError) as err:
        export_dinov2(str(tmp_path / "no" / "such" / "dir"), tmp_path / "out")
    _assert_helpful(err, "no such directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError) as err:
        export_dinov2(str(tmp_path / "empty"), tmp_path / "out")
    _assert_helpful(err, "no config.json")
    (tmp_path / "config-only").mkdir()
    config = {"model_type": "dinov2", "hidden_size": 48, "num_attention_heads": 3}
    (tmp_path / "config-only" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError) as err:
        export_dinov2(str(tmp_path / "config-only"), tmp_path / "out")
    _assert_helpful(err, "config-only")
    assert not (tmp_path / "out").exists()


def test_random_init_of_unknown_id_lists_known_ones(tmp_path):
    with pytest.raises(ExportError, match="facebook/dinov2-small"):
        export_dinov2("someone/dinov2-huge", tmp_path / "out", random_init=True)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": 230}, "multiple of the patch size 14"),
    ({"precision": "bf16"}, "fp32, fp16, int8"),
    ({"geometry": "crop"}, "squash"),
    ({"pooling": "max"}, "gem"),
    ({"opset": 9}, "opset"),
    ({"tolerance": 0.0}, "positive"),
])
def test_bad_options_fail_before_any_work(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_dinov2(TINY, tmp_path / "out", random_init=True, **kwargs)


# -- writing -------------------------------------------------------------------------------------------------
def test_replaces_an_earlier_export_but_never_a_foreign_directory(tmp_path):
    out = tmp_path / "model"
    first = export_dinov2(TINY, out, random_init=True, seed=0)
    second = export_dinov2(TINY, out, random_init=True, seed=1)
    assert json.loads((out / "model.json").read_text())["seed"] == 1
    assert first["onnx"]["sha256"] != second["onnx"]["sha256"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"notes\.txt"):
        export_dinov2(TINY, tmp_path / "mine", random_init=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model"]  # no temp dirs left behind


def test_failed_parity_keeps_the_previous_export(tmp_path):
    out = tmp_path / "model"
    export_dinov2(TINY, out, random_init=True, seed=0)
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="tolerance"):
        export_dinov2(TINY, out, random_init=True, seed=5, tolerance=1e-12)
    assert (out / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_exports_and_warns_about_random_init(tmp_path):
    from typer.testing import CliRunner

    from artlens.cli.export import export_app

    result = CliRunner().invoke(export_app, ["dinov2", "--model", TINY, "--random-init", "--out",
                                             str(tmp_path / "m"), "--pooling", "cls", "--geometry", "aspect"])
    assert result.exit_code == 0, result.output
    assert "pretrained: false" in result.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["pooling"] == "cls" and meta["input"]["geometry"] == "aspect"


def test_cli_error_is_one_red_line_and_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from artlens.cli.export import export_app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(export_app, ["dinov2", "--model", str(tmp_path / "nope"), "--out",
                                             str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    assert "--random-init" in result.output


def test_cli_module_does_not_import_torch():
    # `artlens --help` and the runtime install must not pay for (or need) torch/transformers
    code = ("import sys, artlens.cli.export; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
