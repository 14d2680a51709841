"""Metrics of the HTTP API (``retouch serve``), on an injected registry.

Labels are bounded: ``route`` is the route's path template (``/v1/jobs/{job_id}``,
never the path a client sent; unmatched paths count as ``other``), ``method``
and the status code.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from monitoring.metrics import NAMESPACE

# Synchronous image requests take seconds; health checks, milliseconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY):
        ns = NAMESPACE
        self.requests = Counter("http_requests", "HTTP API requests by route template, method and status",
                                ["route", "method", "status"], namespace=ns, registry=registry)
        self.duration = Histogram("http_request_duration_seconds", "HTTP API request latency, first byte "
                                  "received to response started", ["route", "method"], namespace=ns,
                                  buckets=REQUEST_BUCKETS, registry=registry)
        self.in_progress = Gauge("http_requests_in_progress", "HTTP API requests being served",
                                 namespace=ns, registry=registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, str(int(status))).inc()
        self.duration.labels(route, method).observe(max(seconds, 0.0))
