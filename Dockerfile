# artlens serving image (`artlens serve`). Multi-stage: the build stage installs the package into a venv; the
# runtime stage copies only that venv — no PyTorch (serving needs ONNX Runtime only; `artlens export` and
# `artlens index build --segments` with torch-based tools run elsewhere, e.g. `make model`).
# Python 3.11 as in the Makefile (PYTHON ?= python3.11).
#
# Model and bundle are mounted volumes; the bundles folder must be writable if the admin routes are used
# (a change is written as a new bundle version in a sibling directory, then renamed into place):
#   docker build -t artlens .
#   docker run -p 8000:8000 -e ARTLENS_API_KEYS=change-me \
#     -v $PWD/models/dinov2-small:/models/model:ro -v $PWD/bundles:/bundles artlens
# (the defaults serve /bundles/smvs with /models/model: the bundle `make eval-smvs` builds and the model
# `make model` exports). Another bundle: append `serve --index /bundles/NAME --model /models/model`.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CPU build of ONNX Runtime by default (small image); --build-arg ORT=onnxruntime-gpu for a CUDA host.
ARG ORT=onnxruntime
RUN python -m venv /opt/artlens
WORKDIR /src
COPY pyproject.toml README.md ./
COPY artlens ./artlens
COPY export ./export
COPY indexing ./indexing
COPY recognition ./recognition
COPY verification ./verification
COPY server ./server
COPY eval ./eval
# Without the [export] and [dev] extras: torch, transformers, playwright stay out of the runtime image.
RUN /opt/artlens/bin/pip install --upgrade pip \
    && /opt/artlens/bin/pip install . \
    && if [ "$ORT" != "onnxruntime-gpu" ]; then \
         v=$(/opt/artlens/bin/python -c "import importlib.metadata as m; print(m.version('onnxruntime-gpu'))") \
         && /opt/artlens/bin/pip uninstall -y onnxruntime-gpu && /opt/artlens/bin/pip install "onnxruntime==$v"; \
       fi \
    && /opt/artlens/bin/python -c "import artlens.server.app, onnxruntime, faiss, cv2, pillow_heif" \
    && test -f /opt/artlens/lib/python3.11/site-packages/artlens/server/static/index.html

FROM python:3.11-slim AS runtime
# libgomp: OpenMP runtime used by faiss-cpu and onnxruntime wheels.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /home/artlens --create-home artlens
COPY --from=build /opt/artlens /opt/artlens
ENV PATH=/opt/artlens/bin:$PATH PYTHONUNBUFFERED=1 ARTLENS_DEVICE=auto \
    ARTLENS_HOST=0.0.0.0 ARTLENS_PORT=8000 ARTLENS_INDEX=/bundles/smvs ARTLENS_MODEL=/models/model
USER artlens
WORKDIR /home/artlens
VOLUME ["/models", "/bundles"]
EXPOSE 8000
# /health answers as soon as the server runs; /ready once model and index are loaded (use it for traffic).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["artlens"]
CMD ["serve"]
