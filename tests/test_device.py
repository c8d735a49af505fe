"""ARTLENS_DEVICE: `cuda` means CUDA or a start-up error, never a quiet fall-back to the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from artlens.embedder import Embedder, cuda_problem
from artlens.errors import ModelError


def test_cuda_requested_where_it_is_not_usable_is_a_clear_error(tiny_model, monkeypatch):
    if cuda_problem() is None:
        pytest.skip("CUDA is usable on this machine: ARTLENS_DEVICE=cuda is expected to work here")
    monkeypatch.setenv("ARTLENS_DEVICE", "cuda")
    with pytest.raises(ModelError) as err:
        Embedder(tiny_model)
    assert "ARTLENS_DEVICE=cuda" in str(err.value) and cuda_problem() in str(err.value)


def test_cpu_and_auto_run_on_the_cpu_here_and_a_bad_value_is_refused(tiny_model, monkeypatch):
    monkeypatch.setenv("ARTLENS_DEVICE", "cpu")
    assert Embedder(tiny_model).providers == ["CPUExecutionProvider"]
    if cuda_problem() is not None:
        monkeypatch.setenv("ARTLENS_DEVICE", "auto")
        assert Embedder(tiny_model).providers == ["CPUExecutionProvider"]
    monkeypatch.setenv("ARTLENS_DEVICE", "gpu0")
    with pytest.raises(ModelError, match="ARTLENS_DEVICE='gpu0': choose one of auto, cpu, cuda"):
        Embedder(tiny_model)


def test_serve_with_cuda_required_exits_saying_why(smvs_bundle, tmp_path):
    """The GPU image sets ARTLENS_DEVICE=cuda: without CUDA `artlens serve` must exit, not come up on the CPU."""
    if cuda_problem() is None:
        pytest.skip("CUDA is usable on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTLENS_")}
    env.update(ARTLENS_DEVICE="cuda", ARTLENS_PORT="0", ARTLENS_LOG_JSON="false")
    done = subprocess.run([sys.executable, "-m", "artlens.cli", "serve", "--index", str(smvs_bundle)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"ARTLENS_DEVICE=cuda but CUDA is not usable: {cuda_problem()}" in done.stdout + done.stderr


def test_ort_threads_setting_is_read_or_refused_clearly(monkeypatch):
    import pytest

    from artlens.embedder import ort_threads_setting
    from artlens.errors import ModelError

    monkeypatch.setenv("ARTLENS_ORT_THREADS", "1")
    assert ort_threads_setting() == 1
    monkeypatch.delenv("ARTLENS_ORT_THREADS")
    assert ort_threads_setting() == 0
    monkeypatch.setenv("ARTLENS_ORT_THREADS", "two")
    with pytest.raises(ModelError, match="ARTLENS_ORT_THREADS='two'"):
        ort_threads_setting()
