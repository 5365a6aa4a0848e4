"""Prometheus metrics of the gateway, in a registry per app (so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mediaflow_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mediaflow_http_request_duration_seconds",
            "HTTP request latency (until the response starts)",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.jobs_submitted = Counter(
            "mediaflow_jobs_submitted_total", "jobs accepted by the gateway", ["type"], registry=self.registry
        )
        self.uploads = Counter(
            "mediaflow_media_uploaded_bytes_total", "bytes of accepted uploads", registry=self.registry
        )
        self.queue_ready = Gauge(
            "mediaflow_queue_ready", "jobs waiting on a queue, ready to run", ["queue"], registry=self.registry
        )
        self.queue_deferred = Gauge(
            "mediaflow_queue_deferred", "jobs on a queue waiting for a retry delay", ["queue"], registry=self.registry
        )
        self.queue_running = Gauge(
            "mediaflow_queue_running", "jobs of a queue held by live workers", ["queue"], registry=self.registry
        )
        self.workers = Gauge("mediaflow_workers", "live workers per queue", ["queue"], registry=self.registry)
        # Workers finish jobs, not the gateway, so outcomes come from the store's rolling window.
        self.jobs_finished = Gauge(
            "mediaflow_jobs_finished_recent",
            "jobs finished in the last hour",
            ["queue", "outcome"],
            registry=self.registry,
        )
        # /v1/status's verdicts per queue (routes_status.py), refreshed on every scrape.
        self.queue_stalled = Gauge(
            "mediaflow_queue_stalled",
            "1 while a queue has jobs waiting and no worker has taken jobs from it for MEDIAFLOW_STALL_SECONDS",
            ["queue"],
            registry=self.registry,
        )
        self.worker_crashes = Gauge(
            "mediaflow_worker_crashes_recent",
            "jobs that lost their worker on every attempt, plus workers that vanished without deregistering, "
            "in the last MEDIAFLOW_CRASH_WINDOW_SECONDS",
            ["queue"],
            registry=self.registry,
        )
        # The sweeper runs in the workers; its counters live in the hash mediaflow:sweeper (runtime/sweeper.py).
        self.sweeper = Gauge(
            "mediaflow_sweeper",
            "the sweeper's counters since the store began (runs, jobs_expired, ...)",
            ["counter"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts requests per route template (not per raw path, which would explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                observe()  # SSE streams run for minutes: latency is time to the response head
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe()
