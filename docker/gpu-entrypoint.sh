#!/bin/sh
# Entry point of the CUDA image: refuse to start, with one line saying why, unless ONNX Runtime can run on CUDA
# here (a CUDA build of onnxruntime, an NVIDIA driver, a visible GPU: `docker run --gpus all`). The service then
# checks again when it creates its session (ARTLENS_DEVICE=cuda): a CUDA provider that fails to load its
# libraries stops it instead of running on the CPU. ARTLENS_DEVICE=cpu, set on purpose, skips both.
set -eu
[ "${ARTLENS_DEVICE:-cuda}" = cpu ] || python -c '
import sys
from artlens.embedder import cuda_problem
problem = cuda_problem()
if problem:
    sys.exit(f"artlens: refusing to start: this CUDA image cannot use a GPU here: {problem}")
'
exec artlens "$@"
