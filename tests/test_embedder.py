"""The ONNX embedder: provider choice, preprocessing geometries, pooling, batching."""

import json
import shutil

import numpy as np
import pytest

from artlens.embedder import POOLINGS, Embedder, gpu_usable
from artlens.errors import ModelError


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for h, w in [(300, 200), (120, 480), (256, 256)]]


def test_cpu_only_machine_uses_cpu_provider_quietly(tiny_model, capfd):
    emb = Embedder(tiny_model)
    if not gpu_usable():
        assert emb.providers == ["CPUExecutionProvider"]
    emb.embed_arrays(_images()[:1])
    assert "CUDA" not in capfd.readouterr().err  # no provider error spam on machines without a GPU


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_gives_unit_vectors_and_batching_changes_nothing(tiny_model, pooling):
    emb = Embedder(tiny_model, pooling=pooling)
    images = _images()
    batched = emb.embed_arrays(images, batch_size=3)
    single = np.concatenate([emb.embed_arrays([im]) for im in images])
    assert batched.shape == (3, emb.dim)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize(("geometry", "expected"), [("squash", (224, 224)), ("center-crop", (224, 224)),
                                                   ("aspect", (224, 154))])  # the default export size, 224
def test_geometries(tiny_model, tmp_path, geometry, expected):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    meta = json.loads((model / "model.json").read_text())
    meta["input"]["geometry"] = geometry
    (model / "model.json").write_text(json.dumps(meta))
    emb = Embedder(model)
    x = emb.preprocess(np.zeros((640, 440, 3), np.uint8))  # portrait photo
    assert x.shape == (3, *expected)
    assert emb.embed_arrays([np.zeros((640, 440, 3), np.uint8)]).shape == (1, emb.dim)


def test_model_dir_problems_are_clear(tmp_path, tiny_model):
    with pytest.raises(ModelError, match=r"no model\.json"):
        Embedder(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    with open(broken / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ModelError, match="sha256 does not match"):
        Embedder(broken)
