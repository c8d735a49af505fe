"""`make gpu-check` (scripts/gpu-check.sh): one clear sentence and exit status 3 where there is no GPU; the report it
writes says when a "GPU" run's sessions were on the CPU. The GPU run itself needs a GPU machine (docs/benchmarks.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, SMVS, needs_shared

SCRIPT = REPO / "scripts" / "gpu-check.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _run_script(path_dirs: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    # PATH holds only the given folders: the check must come before anything that needs another tool, and no
    # real nvidia-smi of the test machine can be found.
    env = {"PATH": ":".join(str(d) for d in path_dirs), "HOME": str(tmp_path), "GPU_CHECK_WORK": str(tmp_path / "w"),
           "GPU_CHECK_JSON": str(tmp_path / "gpu-check.json")}
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def _assert_one_sentence(result: subprocess.CompletedProcess, words: str, tmp_path: Path) -> None:
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: ") and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "w").exists() and not (tmp_path / "gpu-check.json").exists()  # no work was started


def test_without_nvidia_smi_it_says_so_and_exits_3(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _run_script([empty], tmp_path)
    _assert_one_sentence(result, "no NVIDIA GPU here (nvidia-smi is not on PATH)", tmp_path)


def test_nvidia_smi_that_sees_no_gpu_says_so_and_exits_3(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"  # what a container started without --gpus, or an unloaded driver, answers
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'"
                    "\nexit 9\n")
    fake.chmod(0o755)
    result = _run_script([bin_dir], tmp_path)
    _assert_one_sentence(result, "nvidia-smi is installed but lists no GPU", tmp_path)


def _report(tmp_path: Path, part: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_check_report.py"), "--out", str(tmp_path / "report.json"),
           "--gpus", "NVIDIA H200, 143771 MiB, 570.86.15", "--size", "224", *extra, f"bench_model/tiny={part}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@needs_shared
def test_report_combines_parts_and_refuses_a_gpu_run_that_ran_on_the_cpu(tmp_path, tiny_model):
    from artlens.eval.bench_model import bench_models

    part = tmp_path / "bench-model-tiny.json"
    part.write_text(json.dumps(bench_models([tiny_model], SMVS / "queries.csv", batch_sizes=(1,), rounds=1,
                                            photos=2)))
    on_cpu = _report(tmp_path, part)  # this machine's session runs on the CPU provider
    assert on_cpu.returncode == 1 and "Traceback" not in on_cpu.stderr
    assert "ran on CPUExecutionProvider, not on the GPU" in on_cpu.stderr
    rehearsal = _report(tmp_path, part, "--rehearsal")
    assert rehearsal.returncode == 0, rehearsal.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["format"] == "artlens-gpu-check/1" and report["rehearsal"] is True
    assert report["pretrained"] is False and report["input_size"] == 224
    assert report["gpus"] == [{"name": "NVIDIA H200", "memory": "143771 MiB", "driver": "570.86.15"}]
    assert report["machine"]["cores"] >= 1
    row = report["summary"]["forward_p50_ms"]["tiny fp32"]
    assert row["provider"] == "CPUExecutionProvider" and row["batch 1"]["p50"] > 0
    assert report["bench_model"]["tiny"]["models"][0]["model"] == str(tiny_model)
