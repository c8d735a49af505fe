"""The serving image, as far as it can be checked without a container engine (none runs on our machines).

docker/rootfs.py builds the Dockerfile's file system under a temporary folder: the build context through
.dockerignore, the COPY steps, and the Dockerfile's own install step (docker/install-venv.sh: a fresh venv,
`pip install -c requirements/lock.txt .`, no extras). The test then checks that torch is not importable there and
starts `artlens serve` from that venv, the way the image's ENTRYPOINT does, on a bundle in a "volume" whose source
images no longer exist: /ready answers, reference images come from the bundle's renditions, the image's
HEALTHCHECK script passes. Marked `docker` (about a minute; `pytest -m "not docker"` leaves it out).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .bundlekit import without_sources
from .conftest import REPO, needs_shared

# docker/rootfs.py is a script, not part of the package: load it by path (registered, as dataclasses need).
_spec = importlib.util.spec_from_file_location("docker_rootfs", REPO / "docker" / "rootfs.py")
rootfs = sys.modules.setdefault("docker_rootfs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(rootfs)

pytestmark = [needs_shared, pytest.mark.docker]
DEV_ONLY = (".venv", ".git", "models", "bundles", "out", "reports", "tests", "docs", ".pytest_cache",
            ".ruff_cache", "artlens.egg-info", "build", ".ci", "Makefile")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rootfs")
    return root, rootfs.build(root, REPO / "Dockerfile")


def test_build_context_is_only_what_the_images_copy():
    files = rootfs.context_files()
    tops = {f.split("/")[0] for f in files}
    assert not tops & set(DEV_ONLY), tops & set(DEV_ONLY)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert sum((REPO / f).stat().st_size for f in files) < 5_000_000  # the .venv alone is several GB
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):  # every COPY source is in the context (else SystemExit)
        plan = rootfs.build(Path("/nonexistent-rootfs"), REPO / dockerfile, plan=True)
        assert any(step.startswith("server -> ") for step in plan["copied"]), plan
        assert plan["ran"] and all("install-venv.sh" in step for step in plan["ran"])


def test_dockerignore_follows_dockers_rules(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n*\n!keep\n!docs/*.md\n**/__pycache__\nkeep/secret.txt\n")
    for rel in ("keep/a.py", "keep/sub/b.py", "keep/__pycache__/c.pyc", "keep/secret.txt", "docs/x.md", "docs/y.txt",
                "drop.txt", ".venv/lib/big.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert rootfs.context_files(tmp_path) == ["docs/x.md", "keep/a.py", "keep/sub/b.py"]


def test_cpu_dockerfile_installs_no_gpu_runtime_and_no_build_arg():
    text = (REPO / "Dockerfile").read_text()
    assert "ARG ORT" not in text and "onnxruntime-gpu" not in text.split("FROM", 1)[1]
    assert "install-venv.sh /opt/artlens /src cpu" in text
    assert "install-venv.sh /opt/artlens /src gpu" in (REPO / "Dockerfile.gpu").read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_image_venv_serves_a_mounted_bundle_without_its_source_images(image, smvs_bundle, tiny_model, tmp_path):
    root, summary = image
    venv_bin = root / "opt" / "artlens" / "bin"
    assert summary["ran"] == ["sh docker/install-venv.sh /opt/artlens /src cpu"]
    no_torch = subprocess.run([venv_bin / "python", "-I", "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    ort = subprocess.run([venv_bin / "python", "-I", "-c", "import onnxruntime as o; print(o.get_device())"],
                         capture_output=True, text=True, check=True)
    assert ort.stdout.strip() == "CPU"

    # The volumes: /bundles/smvs (source images gone) and /models/model, as the image's defaults name them.
    volumes = tmp_path / "volumes"
    without_sources(smvs_bundle, volumes / "bundles" / "smvs")
    shutil.copytree(tiny_model, volumes / "models" / "model")
    image_env = {k: v for k, v in summary["env"].items() if k.startswith("ARTLENS_") or k == "PYTHONUNBUFFERED"}
    assert image_env["ARTLENS_INDEX"] == "/bundles/smvs" and image_env["ARTLENS_MODEL"] == "/models/model"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARTLENS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(image_env, ARTLENS_INDEX=str(volumes / "bundles" / "smvs"),
               ARTLENS_MODEL=str(volumes / "models" / "model"), ARTLENS_HOST="127.0.0.1", ARTLENS_PORT=str(port),
               PATH=f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp_path))
    home = tmp_path / "home"  # the image's WORKDIR: no source tree beside the process
    home.mkdir()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([venv_bin / "artlens", "serve"], cwd=home, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240  # generous: a loaded 2-core machine
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = _get(f"{base}/ready")[0]
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"not ready (exit {server.poll()}): {log.read_text()[-3000:]}"
        code, headers, body = _get(f"{base}/v1/artworks/smvs-001/image")
        assert code == 200 and headers["content-type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
        code, _, body = _get(f"{base}/v1/artworks/smvs-001")
        assert code == 200 and json.loads(body)["object_id"] == "smvs-001"
        health = subprocess.run([venv_bin / "python", root / "opt" / "artlens" / "healthcheck.py"], env=env,
                                capture_output=True, text=True, timeout=30)
        assert health.returncode == 0 and health.stdout.startswith("healthy"), health.stdout + health.stderr
        cuda = subprocess.run([venv_bin / "python", root / "opt" / "artlens" / "healthcheck.py"],
                              env={**env, "ARTLENS_DEVICE": "cuda"}, capture_output=True, text=True, timeout=30)
        assert cuda.returncode == 1 and "ARTLENS_DEVICE=cuda" in cuda.stdout  # the GPU image's check fails loudly
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
