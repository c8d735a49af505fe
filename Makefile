# artlens — `make demo` runs the main job, `make test` runs the tests. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SHARED := ../shared
MODEL := models/dinov2-small
OUT := out/demo

.PHONY: venv model demo test lint bench eval-smvs serve loadtest clean

venv: $(VENV)/.installed

# torch is installed first and pinned: the CPU build of 2.13.0 is what these machines provide; an unpinned
# torch would pull several GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,dev,eval]'
	touch $@

# Pretrained DINOv2 ViT-S/14 where a model hub is reachable; otherwise the same architecture, random-init
# (pretrained: false, warned about loudly), so the demo still runs end to end offline.
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

clean:
	rm -rf $(OUT) bundles reports .pytest_cache
