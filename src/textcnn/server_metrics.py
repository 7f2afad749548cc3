"""``GET /metrics``: the server's Prometheus metrics, kept with ``prometheus_client`` in a registry of
the application's own (several applications in one process do not share counters).

* ``textcnn_requests_total{endpoint, status}``: HTTP requests answered;
* ``textcnn_request_duration_seconds{endpoint}``: their latency (histogram);
* ``textcnn_batch_requests`` and ``textcnn_batch_texts``: requests and texts per model call (histograms);
* ``textcnn_queue_depth``: predict and explain requests in the server now (bounded by ``--max-queue``).

``endpoint`` is one of the API's paths, or ``other``: a client cannot grow the label set.
"""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ENDPOINTS = ("/v1/predict", "/v1/explain", "/v1/health", "/v1/metadata", "/metrics", "/")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("textcnn_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("textcnn_request_duration_seconds", "Time from request to last response byte.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("textcnn_batch_requests", "Requests answered by one model call.",
                                        buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_texts = Histogram("textcnn_batch_texts", "Texts in one model call.",
                                     buckets=SIZE_BUCKETS, registry=self.registry)
        depth = Gauge("textcnn_queue_depth", "Predict and explain requests in the server (being read, queued "
                      "or running); at most --max-queue.", registry=self.registry)
        depth.set_function(queue_depth)
        self._latency = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}

    def observe_batch(self, requests: int, texts: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_texts.observe(texts)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        self._latency[endpoint].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by endpoint and status, and times it."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
