# artlens serving image (`artlens serve`), CPU. Multi-stage: the build stage installs the package into a venv with
# docker/install-venv.sh (every version pinned by requirements/lock.txt, no extras: no PyTorch, transformers or
# Playwright; ONNX Runtime's CPU build); the runtime stage copies only that venv. `artlens export` and
# `artlens index build --segments` need torch and run elsewhere (`make model`, a dev venv). CUDA hosts: Dockerfile.gpu.
# Python 3.11 as in the Makefile (PYTHON ?= python3.11). The build context is an allow-list (.dockerignore).
#
# Model and bundle are mounted volumes; the bundles folder must be writable if the admin routes are used
# (a change is written as a new bundle version in a sibling directory, then renamed into place). Reference images
# are served from the renditions inside the bundle: the source images the bundle was built from are not needed
# (a bundle built before renditions: `artlens index renditions --index B` where its sources are, before mounting).
#   docker build -t artlens .
#   docker run -p 8000:8000 -e ARTLENS_API_KEYS=change-me \
#     -v $PWD/models/dinov2-small:/models/model:ro -v $PWD/bundles:/bundles artlens
# (the defaults serve /bundles/smvs with /models/model: the bundle `make eval-smvs` builds and the model
# `make model` exports). Another bundle: append `serve --index /bundles/NAME --model /models/model`.
#
# What has been run (docs/service.md, "Docker"): no Docker daemon runs on our machines and Docker Hub is not
# reachable from them, so `docker build` has never run on this file. tests/test_docker_rootfs.py (in `make test`)
# builds its file system without an engine (docker/rootfs.py: the context through .dockerignore, the COPY steps,
# this file's RUN docker/install-venv.sh into a fresh venv, asserting torch is not importable), then runs
# `artlens serve` from that venv on a bundle whose source images are gone: /ready, a reference image, the
# HEALTHCHECK script. docker/buildah-check.sh built this file with buildah (Debian's package) on a stand-in
# base image (Debian bookworm's Python 3.11 via debootstrap) and served a bundle from the image: every step ran.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON=python3.11
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY artlens ./artlens
COPY export ./export
COPY indexing ./indexing
COPY recognition ./recognition
COPY calibration ./calibration
COPY verification ./verification
COPY server ./server
COPY eval ./eval
COPY docker ./docker
RUN sh docker/install-venv.sh /opt/artlens /src cpu

FROM python:3.11-slim AS runtime
# libgomp: OpenMP runtime used by faiss-cpu and onnxruntime wheels.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /home/artlens --create-home artlens
COPY --from=build /opt/artlens /opt/artlens
COPY docker/healthcheck.py /opt/artlens/healthcheck.py
ENV PATH=/opt/artlens/bin:$PATH PYTHONUNBUFFERED=1 ARTLENS_DEVICE=cpu \
    ARTLENS_HOST=0.0.0.0 ARTLENS_PORT=8000 ARTLENS_INDEX=/bundles/smvs ARTLENS_MODEL=/models/model
USER artlens
WORKDIR /home/artlens
VOLUME ["/models", "/bundles"]
EXPOSE 8000
# Healthy once /ready answers: model and index loaded (the service loads both before it listens).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/artlens/healthcheck.py"]
ENTRYPOINT ["artlens"]
CMD ["serve"]
