"""Prometheus metrics (prometheus_client), one registry per app so tests can build several apps."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported for the route
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Recognition takes 0.1–30 s on a small CPU under load; stages 1 ms–10 s.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("artlens_http_request_duration_seconds", "HTTP request latency by route",
                                  ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.stages = Histogram("artlens_recognition_stage_seconds", "Recognition latency by pipeline stage",
                                ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.outcomes = Counter("artlens_recognitions_total", "Recognition answers by outcome (match, no_match)",
                                ["outcome"], registry=self.registry)
        self.queue_depth = Gauge("artlens_inference_queue_depth",
                                 "Recognitions admitted and not finished (running + waiting)",
                                 registry=self.registry)
        self.rejected = Counter("artlens_overload_rejections_total", "Requests answered 503 because the queue was full",
                                registry=self.registry)
        self.batch_size = Histogram("artlens_embed_batch_size", "Photos per ONNX call (micro-batching)",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=self.registry)
        self.bundle_version = Gauge("artlens_bundle_version", "Version of the bundle being served",
                                    registry=self.registry)
        self.artworks = Gauge("artlens_artworks", "Artworks in the served index", registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Clients choose the method token: unknown ones share a label, so label sets stay bounded.
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).observe(seconds)

    def observe_recognition(self, status: str, timings_ms: dict[str, float]) -> None:
        self.outcomes.labels(status).inc()
        for stage, ms in timings_ms.items():
            self.stages.labels(stage).observe(ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
