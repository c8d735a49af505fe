#!/usr/bin/env bash
# `make gpu-check`: the GPU numbers of docs/benchmarks.md in one run, on a machine with an NVIDIA GPU.
#
# Installs ONNX Runtime's CUDA build (`make venv-gpu`), exports DINOv2 ViT-S/14 and ViT-B/14 with seeded random
# weights (no model hub needed; model.json says pretrained: false) in fp32 and fp16, times the bare forward at
# batch 1/8/32 (`artlens bench model`), times full recognitions on the SMVS photos with the model forward in the
# request (`artlens bench recognition` on a bundle built with --shortlist fused), and writes all of it, with the
# machine and its GPUs, into one JSON (default reports/gpu-check.json).
#
# Without a usable GPU it stops before any work with one sentence on stderr and exit status 3.
# GPU_CHECK_REHEARSAL=1 runs the same steps on the CPU with the tiny test architecture and small batches, to check
# the script itself on a machine without a GPU; its JSON says "rehearsal": true and holds no GPU numbers.
# Settings (environment): SHARED (default ../shared: data/smvs-museum), GPU_CHECK_SIZE (input px, default 224),
# GPU_CHECK_WORK (models and bundle, default out/gpu-check), GPU_CHECK_JSON (the report).
set -euo pipefail

HERE=${BASH_SOURCE[0]%/*}  # the script's folder, without needing dirname on PATH
[[ $HERE != "${BASH_SOURCE[0]}" ]] || HERE=.
cd "$HERE/.."  # the repository root

say_no_gpu() {
  echo "gpu-check: $1" >&2
  exit 3
}

REHEARSAL=${GPU_CHECK_REHEARSAL:-0}
if [[ $REHEARSAL != 1 ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    say_no_gpu "no NVIDIA GPU here (nvidia-smi is not on PATH); run make gpu-check on a machine with a CUDA GPU and its driver."
  fi
  if ! GPUS=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null) \
      || [[ -z $GPUS ]]; then
    say_no_gpu "nvidia-smi is installed but lists no GPU (driver not loaded, or a container started without --gpus)."
  fi
else
  GPUS=""
fi

SHARED=${SHARED:-../shared}
DATA=$SHARED/data/smvs-museum
SIZE=${GPU_CHECK_SIZE:-224}
WORK=${GPU_CHECK_WORK:-out/gpu-check}
JSON=${GPU_CHECK_JSON:-reports/gpu-check.json}
BIN=.venv/bin
if [[ ! -f $DATA/queries.csv || ! -f $DATA/collection.csv ]]; then
  echo "gpu-check: the SMVS photos are not at $DATA (collection.csv and queries.csv); set SHARED to the folder that holds data/smvs-museum." >&2
  exit 2
fi

if [[ $REHEARSAL == 1 ]]; then
  export ARTLENS_DEVICE=cpu
  ARCHS=(tiny)
  BATCHES=1,2
  ROUNDS=2
  REPEAT=1
  [[ -x $BIN/artlens ]] || make venv
else
  export ARTLENS_DEVICE=cuda  # the embedder then refuses to start rather than fall back to the CPU
  ARCHS=(small base)
  BATCHES=1,8,32
  ROUNDS=10
  REPEAT=2
  make venv-gpu
  PROBLEM=$($BIN/python -c 'from artlens.embedder import cuda_problem; print(cuda_problem() or "")')
  [[ -z $PROBLEM ]] || say_no_gpu "ONNX Runtime cannot use the GPU here: $PROBLEM."
fi

model_id() {
  if [[ $1 == tiny ]]; then echo artlens/dinov2-tiny; else echo "facebook/dinov2-$1"; fi
}

mkdir -p "$WORK" "$(dirname "$JSON")"
PARTS=()
for arch in "${ARCHS[@]}"; do
  for precision in fp32 fp16; do
    dir=$WORK/models/$arch-$SIZE-$precision
    # An earlier run's export is reused: the weights are seeded, so it would come out the same.
    [[ -f $dir/model.json ]] || $BIN/artlens export dinov2 --model "$(model_id "$arch")" --random-init --seed 0 \
      --size "$SIZE" --precision "$precision" --out "$dir"
  done
  $BIN/artlens bench model --model "$WORK/models/$arch-$SIZE-fp32" --model "$WORK/models/$arch-$SIZE-fp16" \
    --queries "$DATA/queries.csv" --batch "$BATCHES" --rounds "$ROUNDS" --json "$WORK/bench-model-$arch.json"
  PARTS+=("bench_model/$arch=$WORK/bench-model-$arch.json")
done

# Recognition with the forward in every request: the bundle stores global embeddings (--shortlist fused), as a
# pretrained model's does; a random-init bundle built by default would skip the model altogether.
first=${ARCHS[0]}
bundle=$WORK/bundle-$first-$SIZE
[[ -f $bundle/bundle.json ]] || $BIN/artlens index build --model "$WORK/models/$first-$SIZE-fp32" \
  --collection "$DATA/collection.csv" --shortlist fused --out "$bundle"
$BIN/artlens bench recognition --index "$bundle" --queries "$DATA/queries.csv" --repeat "$REPEAT" \
  --json "$WORK/bench-recognition-$first.json"
PARTS+=("bench_recognition/$first=$WORK/bench-recognition-$first.json")

FLAGS=(--out "$JSON" --gpus "$GPUS" --size "$SIZE" --device "$ARTLENS_DEVICE")
[[ $REHEARSAL != 1 ]] || FLAGS+=(--rehearsal)
$BIN/python scripts/gpu_check_report.py "${FLAGS[@]}" "${PARTS[@]}"
