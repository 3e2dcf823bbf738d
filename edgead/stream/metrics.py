"""Prometheus metrics and a health check over HTTP, for ``edgead serve --metrics`` and the bridges' ``--metrics``.

``/metrics`` is Prometheus text (``prometheus_client``); ``/healthz`` answers 200 while the process does its job and
503 otherwise, for a supervisor or a load balancer. Counters are read from the process's own counters at each
scrape (one source of truth: the service's status map, the bridges' counters), so a scrape never disagrees with
what the service publishes; only the latency histogram and the anomalous count are fed per result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:  # an optional dependency (the plant extra): this module imports without it, an exporter needs it
    from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
except ImportError:  # pragma: no cover - the dev and plant extras install it
    CollectorRegistry = None

# receive -> publish; a CPU frame takes 0.05-1 s, a queue under a burst can hold a few seconds
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVICE_COUNTERS = {  # status key -> (metric name, help)
    "frames_in": ("frames_in", "frames received from sensors"),
    "frames_out": ("results", "results published (one per frame processed, errors included)"),
    "dropped": ("dropped", "frames dropped by flow control (no result)"),
    "seq_gaps": ("seq_gaps", "frames missing from the sensors' seq sequences (lost before the service)"),
    "seq_restarts": ("seq_restarts", "times a sensor's seq started over"),
    "errors": ("errors", "error results: unreadable frames, frames not inspected, internal errors"),
    "not_inspected": ("not_inspected", "error results for frames read but not judged"),
    "reconnects": ("reconnects", "reconnects of the sensor endpoint the service made itself"),
}


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` for 127.0.0.1; port 0 picks a free one) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or ":" in host:
        raise ValueError(f"metrics address must be HOST:PORT (IPv4 or a name), got {address!r}")
    return host or "127.0.0.1", int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # a scrape every few seconds is not news
        pass


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``address``, bound at construction (a port in use fails at once), served from
    :meth:`start` in a daemon thread until :meth:`close`."""

    def __init__(self, address: str, registry, healthy: Callable[[], bool]):
        host, port = parse_address(address)
        metrics_app = make_wsgi_app(registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                ok = healthy()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"ok\n" if ok else b"unhealthy\n"]
            if path == "/metrics":
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"/metrics or /healthz\n"]

        try:
            self.server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise ValueError(f"cannot serve metrics on {address}: {exc}") from None
        self.address = f"{host}:{self.server.server_port}"
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="edgead-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


class CountersCollector:
    """Exposes a counters() map at each scrape: ``counters`` and ``gauges`` map its keys to (metric name, help);
    ``info`` gives the labels of a ``<prefix>_model`` or similar info metric."""

    def __init__(self, prefix: str, read: Callable[[], dict], counters: dict[str, tuple[str, str]],
                 gauges: dict[str, tuple[str, str]] | None = None, info: tuple[str, str, Callable[[dict], dict]]
                 | None = None):
        self.prefix, self.read, self.counters, self.gauges, self.info = prefix, read, counters, gauges or {}, info

    def collect(self) -> Iterable:
        values = self.read()
        for key, (name, help_text) in self.counters.items():
            yield CounterMetricFamily(f"{self.prefix}_{name}", help_text, value=values[key])
        for key, (name, help_text) in self.gauges.items():
            yield GaugeMetricFamily(f"{self.prefix}_{name}", help_text, value=float(values[key]))
        if self.info is not None:
            name, help_text, labels = self.info
            yield InfoMetricFamily(f"{self.prefix}_{name}", help_text, value=labels(values))


class ServiceMetrics:
    """``edgead serve``'s exporter: counters from :meth:`Service.status`, a latency histogram and the anomalous
    count from :meth:`observe` (called by the publisher per result), health from :meth:`Service.healthy`."""

    def __init__(self, service, address: str):
        registry = new_registry()
        registry.register(CountersCollector(
            "edgead", service.status, SERVICE_COUNTERS,
            gauges={"healthy": ("healthy", "1 while every service thread runs"),
                    "uptime_s": ("uptime_seconds", "seconds since the service started")},
            info=("model", "the engine the service runs",
                  lambda s: {"name": s["model_name"], "hash": s["model_hash"], "backend": s["backend"]})))
        self.latency = Histogram("edgead_latency_seconds", "receive to publish, per result",
                                 buckets=LATENCY_BUCKETS_S, registry=registry)
        self.anomalous = Counter("edgead_anomalous", "results judged anomalous (rejected parts)", registry=registry)
        self.server = MetricsServer(address, registry, service.healthy)
        self.address = self.server.address

    def observe(self, result: dict) -> None:
        self.latency.observe(max(0.0, result["t_published"] - result["t_received"]))
        if result["anomalous"]:
            self.anomalous.inc()

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()


def new_registry():
    """A fresh registry, or a clear error where prometheus-client is not installed."""
    if CollectorRegistry is None:
        raise RuntimeError("--metrics needs prometheus-client: pip install 'edgead[plant]'")
    return CollectorRegistry(auto_describe=True)


def bridge_metrics(address: str, counters: Callable[[], dict], names: dict[str, str], gauges: dict[str, str],
                   healthy: Callable[[], bool]) -> MetricsServer:
    """A bridge's exporter: each key of ``counters()`` in ``names`` as counter ``edgead_bridge_<key>``, in
    ``gauges`` as gauge ``edgead_bridge_<key>`` (the values are the help texts)."""
    registry = new_registry()
    registry.register(CountersCollector("edgead_bridge", counters, {k: (k, h) for k, h in names.items()},
                                        gauges={k: (k, h) for k, h in gauges.items()}))
    return MetricsServer(address, registry, healthy)
