"""Prometheus metrics of the gateway, on their own registry, served on loopback."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("brandgate.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self._server: Any = None

    def serve(self, host: str, port: int) -> bool:
        """Start the /metrics endpoint in a thread; False (and a warning) when it cannot bind."""
        try:
            result = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.warning("metrics endpoint %s:%d not started: %s", host, port, exc)
            return False
        self._server = result[0] if isinstance(result, tuple) else None
        log.info("metrics on http://%s:%d/metrics", host, port)
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
