# artlens serving image. Multi-stage: the build stage installs the package into a venv; the runtime stage
# copies only that venv — no PyTorch (serving needs ONNX Runtime only; `artlens export` runs elsewhere).
# Model and bundle are mounted volumes:
#   docker run -v $PWD/models/dinov2-small:/models/model:ro -v $PWD/bundles/met:/bundles/met:ro artlens \
#     recognize --index /bundles/met --model /models/model /photos/visitor.jpg
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
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
# Without the [export] extra: torch and transformers stay out of the runtime image.
RUN /opt/artlens/bin/pip install --upgrade pip && /opt/artlens/bin/pip install .

FROM python:3.11-slim AS runtime
# libgomp: OpenMP runtime used by faiss-cpu and onnxruntime wheels.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /home/artlens --create-home artlens
COPY --from=build /opt/artlens /opt/artlens
ENV PATH=/opt/artlens/bin:$PATH PYTHONUNBUFFERED=1 ARTLENS_DEVICE=auto
USER artlens
WORKDIR /home/artlens
VOLUME ["/models", "/bundles"]
# The HTTP service (issue 4) adds `artlens serve`; until then the image runs the CLI.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["artlens", "--help"]
ENTRYPOINT ["artlens"]
CMD ["--help"]
