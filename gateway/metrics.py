"""Prometheus metrics of the gateway, on their own registry, served on loopback."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger("brandgate.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time ...
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.messages = Counter(
            "brandgate_messages_total",
            "Messages finished, by verdict and the action taken",
            ["verdict", "action"],
            registry=r,
        )
        self.scan_seconds = Histogram(
            "brandgate_scan_seconds",
            "Time to scan one message (queueing for a worker included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.relay_errors = Counter(
            "brandgate_relay_errors_total",
            "Messages the next hop did not accept, by kind (temp, perm)",
            ["kind"],
            registry=r,
        )
        self.scan_errors = Counter(
            "brandgate_scan_errors_total", "Scans that failed without a verdict", registry=r
        )
        self.scan_overruns = Counter(
            "brandgate_scan_overruns_total",
            "Scans that crossed their time or memory budget (limits.on_overrun applied)",
            registry=r,
        )
        self.quarantine_size = Gauge(
            "brandgate_quarantine_messages", "Messages held in quarantine", registry=r
        )
        self.sessions_active = Gauge(
            "brandgate_sessions_active", "SMTP sessions open now", registry=r
        )
        self.sessions_refused = Counter(
            "brandgate_sessions_refused_total",
            "Connections refused at connect, by reason (network, limit, draining)",
            ["reason"],
            registry=r,
        )
        self._server: ThreadingHTTPServer | None = None

    def serve(self, host: str, port: int) -> bool:
        """Start the /metrics endpoint in a thread; False (and a warning) when it cannot bind.

        Only GET/HEAD of /metrics answer (a scraper's path); anything else is 404, as admins
        expect from an exporter, and nothing else of the process is reachable there."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            server_version = "brandgate-metrics"

            def do_GET(self) -> None:
                if urlsplit(self.path).path != "/metrics":
                    self._reply(404, b"not found: metrics are at /metrics\n", "text/plain")
                    return
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

            def do_HEAD(self) -> None:
                self.do_GET()

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per scrape would drown the message log

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            log.warning("metrics endpoint %s:%d not started: %s", host, port, exc)
            return False
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
        self._server = server
        log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
        return True

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
