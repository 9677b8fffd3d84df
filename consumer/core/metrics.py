"""Prometheus ``/metrics`` and ``/healthz`` for the worker (off unless TELEMETRY_METRICS_PORT is set).

The same counters as ``telemetry_pipeline`` (:mod:`consumer.core.selftelemetry`), with a ``shard``
label (and ``reason`` for dead letters), in a private registry so that importing the module
registers nothing globally. ``/healthz`` answers 200 while the worker loop has completed an
iteration within ``stale_after_s``, else 503: a stuck loop (Redis hung, deadlock) fails the
probe; an InfluxDB outage does not, since the worker then is doing what it should (retrying).

Usage::

    metrics = Metrics(stale_after_s=30)
    stats = SelfTelemetry(worker="w1", window_s=10, listener=metrics.listen)
    server = metrics.serve(9108)      # a daemon thread on 127.0.0.1; server.shutdown() to stop
    server = metrics.serve(9108, "0.0.0.0")   # every interface (TELEMETRY_METRICS_HOST)
    metrics.beat()                    # once per loop iteration
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DEFAULT_STALE_AFTER_S: Final = 60.0
_DEAD_PREFIX: Final = "dead_letters_"


class Metrics:
    """The worker's Prometheus collectors and a liveness stamp."""

    def __init__(self, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.registry = CollectorRegistry()
        self.stale_after_s = stale_after_s
        self._last_beat = time.monotonic()
        self._counters: dict[str, Counter] = {}
        self.dead_letters = Counter("telemetry_worker_dead_letters_by_reason", "Dead letters by reason",
                                    ["shard", "reason"], registry=self.registry)
        self.gauges = {
            name: Gauge(f"telemetry_worker_{name}", f"Current {name.replace('_', ' ')}", ["shard"],
                        registry=self.registry)
            for name in ("lag_entries", "open_windows")
        }
        self.write_latency = Histogram("telemetry_worker_write_latency_seconds", "Sink write duration",
                                       ["shard"], registry=self.registry)

    def _counter(self, name: str) -> Counter:
        counter = self._counters.get(name)
        if counter is None:
            counter = Counter(f"telemetry_worker_{name}", f"Total {name.replace('_', ' ')}", ["shard"],
                              registry=self.registry)
            self._counters[name] = counter
        return counter

    def listen(self, kind: str, shard: int, name: str, value: float) -> None:
        """A :data:`consumer.core.selftelemetry.Listener`: mirror one update into Prometheus."""
        label = str(shard)
        if kind == "count":
            if name.startswith(_DEAD_PREFIX):
                self.dead_letters.labels(label, name[len(_DEAD_PREFIX):]).inc(value)
            else:
                self._counter(name).labels(label).inc(value)
        elif kind == "gauge" and name in self.gauges:
            self.gauges[name].labels(label).set(value)
        elif kind == "latency":
            self.write_latency.labels(label).observe(value / 1000.0)

    def beat(self) -> None:
        """The loop completed an iteration."""
        self._last_beat = time.monotonic()

    def healthy(self) -> bool:
        """Whether the loop is alive."""
        return time.monotonic() - self._last_beat <= self.stale_after_s

    def render(self) -> bytes:
        """The exposition text."""
        return bytes(generate_latest(self.registry))

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """Serve ``/metrics`` and ``/healthz`` on a daemon thread, on ``host`` (loopback unless told:
        the endpoints have no authentication)."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._reply(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    ok = metrics.healthy()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"stale\n", "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds must not flood the log

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="telemetry-metrics", daemon=True).start()
        return server
