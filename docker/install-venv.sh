#!/bin/sh
# install-venv.sh VENV SRC [cpu|gpu]: install artlens from the source tree SRC into a fresh virtual environment
# VENV, every version pinned by SRC/requirements/lock.txt, without the export/dev/eval extras (no PyTorch,
# transformers or Playwright), then check what was installed. cpu: ONNX Runtime's CPU build; gpu: its CUDA build
# (onnxruntime-gpu) in its place. The images' install step (Dockerfile, Dockerfile.gpu); docker/rootfs.py runs
# the same script for tests/test_docker_rootfs.py.
set -eu
venv=$1
src=$2
flavour=${3:-cpu}
python=${PYTHON:-python3.11}
lock="$src/requirements/lock.txt"

"$python" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install --no-cache-dir --disable-pip-version-check -c "$lock" "$src"
if [ "$flavour" = gpu ]; then
  # onnxruntime and onnxruntime-gpu write the same `onnxruntime` module: remove the CPU build, then reinstall
  # the CUDA build so that its files are the ones left.
  "$pip" install --no-cache-dir --disable-pip-version-check -c "$lock" onnxruntime-gpu
  "$pip" uninstall -y onnxruntime
  "$pip" install --no-cache-dir --disable-pip-version-check -c "$lock" --force-reinstall --no-deps onnxruntime-gpu
fi

# -I: the check must see the installed package, not the source tree in the working directory (whose artlens/
# folder lacks the stage packages that install as artlens.server, artlens.indexing, …).
"$venv/bin/python" -I - "$flavour" <<'PY'
import importlib.metadata as md
import importlib.util
import os
import sys
from pathlib import Path

import cv2, faiss, onnxruntime, pillow_heif  # noqa: E401,F401  (the service's native wheels import)
import artlens.server.app

flavour = sys.argv[1]
dists = {d.metadata["Name"].lower() for d in md.distributions()}
problems = []
if importlib.util.find_spec("torch") is not None:
    problems.append("torch is installed: the serving image must not carry PyTorch")
if not (Path(artlens.server.app.__file__).parent / "static" / "index.html").is_file():
    problems.append("the web page (artlens/server/static) was not installed")
want, other = ("onnxruntime-gpu", "onnxruntime") if flavour == "gpu" else ("onnxruntime", "onnxruntime-gpu")
if want not in dists or other in dists:
    problems.append(f"expected {want} alone, found {sorted(d for d in dists if d.startswith('onnxruntime'))}")
if flavour == "gpu":
    from onnxruntime.capi import build_and_package_info as ort_build

    built_for = getattr(ort_build, "cuda_version", "")
    base = os.environ.get("CUDA_VERSION", "")  # set by the nvidia/cuda base images
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        problems.append("this onnxruntime build has no CUDA execution provider")
    if base and built_for.split(".")[0] != base.split(".")[0]:
        problems.append(f"onnxruntime-gpu {onnxruntime.__version__} is built for CUDA {built_for}, the base image"
                        f" has CUDA {base}: change the base image or the onnxruntime-gpu pin together")
if problems:
    sys.exit("install-venv.sh: " + "; ".join(problems))
print(f"artlens {md.version('artlens')} ({flavour}): onnxruntime {onnxruntime.__version__}"
      f" {onnxruntime.get_available_providers()}, no torch")
PY
