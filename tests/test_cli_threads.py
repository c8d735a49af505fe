"""Every `artlens` command gives OpenBLAS one thread per call (concurrent requests and the shortlist's verification
threads are the parallelism; docs/service.md), set before NumPy loads so that it takes effect, and keeps an
operator's own OPENBLAS_NUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The real command in a fresh interpreter, as the console script runs it; the bundle does not exist, so the command
# stops after loading its settings (and NumPy) and before any work. Then: OpenBLAS's own count of its threads.
CHILD = r"""
import ctypes, os, sys
from artlens.cli import app
numpy_before = "numpy" in sys.modules
try:
    app(sys.argv[1:], standalone_mode=False)
except BaseException:
    pass
import numpy
assert "numpy" in sys.modules
paths = [line.split()[-1] for line in open("/proc/self/maps") if "scipy_openblas" in line]
if not paths:
    print("no-openblas")
    sys.exit(0)
print(numpy_before, os.environ.get("OPENBLAS_NUM_THREADS"), ctypes.CDLL(paths[0]).scipy_openblas_get_num_threads64_())
"""


def _blas_threads(args: list[str], **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                              "GOTO_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", CHILD, *args], env={**clean, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    if words == ["no-openblas"]:
        pytest.skip("this NumPy is not built with scipy-openblas")
    return words


@pytest.mark.skipif(not Path("/proc/self/maps").exists() or (os.cpu_count() or 1) < 2,
                    reason="needs Linux and at least 2 cores (OpenBLAS's default is one thread per core)")
@pytest.mark.parametrize("command", [["serve", "--index"], ["recognize", "photo.jpg", "--index"],
                                     ["bench", "recognition", "--queries", "q.csv", "--index"]],
                         ids=["serve", "recognize", "bench-recognition"])
def test_commands_set_one_blas_thread_before_numpy_loads_and_keep_the_operators_value(tmp_path, command):
    args = [*command, str(tmp_path / "no-bundle")]
    assert _blas_threads(args) == ["False", "1", "1"]
    assert _blas_threads(args, OPENBLAS_NUM_THREADS="2") == ["False", "2", "2"]
