"""What every live front door shares: one running service with its scan pool, quarantine
store, metrics, reload and drain, and the steps of one message that do not depend on the door.

    Service            config + [gateway] settings, ScanService, QuarantineStore, Metrics
      handling(rcpts)  how the worker finishes a message (actions.Handling)
      scan(...)        strip, scan, decide and mark in a worker, within the budget
      note_decision    the decision into the log line and the metrics
      note_overrun     limits.on_overrun, counted
      quarantine(...)  durably into the store, or None (logged) when the store failed
      reload / _open / _drain / _close

The SMTP modes (gateway.smtp.server.Gateway) and the milter (gateway.milter.server
.MilterGateway) subclass it with their listener, their sessions and how they answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import threading
import time
import tomllib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from config.loader import SHIPPED_DIR, Config, ConfigError, load_config
from filters.types import Envelope, Verdict
from gateway import actions
from gateway.metrics import Metrics
from gateway.quarantine import QuarantineStore
from gateway.scanpool import (
    EngineFactory,
    Processed,
    ScanError,
    ScanOverrun,
    ScanService,
    default_engine_factory,
    engine_config_for_serve,
)
from gateway.settings import GatewaySettings, from_config, with_overrides
from gateway.version import version

log = logging.getLogger("brandgate.gateway")

TEMPFAIL_REPLY = "451 4.3.0 Temporary failure, try again later"
OVERRUN_REPLY = "451 4.3.0 Message could not be scanned within its budget, try again later"
_LOGSAFE = re.compile(r"[\x00-\x1f\x7f]")

# settings that only a restart changes: a reload keeps the running value and says so
RESTART_ONLY = ("listen", "quarantine_dir", "metrics", "workers")


def dkim_set_by_admin(config: Config) -> bool:
    """Does an admin file (not the shipped one) set engine.verify_dkim?"""
    shipped = str((SHIPPED_DIR / "brandgate.toml").resolve())
    for src in config.sources:
        if src == shipped:
            continue
        try:
            with open(src, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            continue
        engine = doc.get("engine")
        if isinstance(engine, dict) and "verify_dkim" in engine:
            return True
    return False


def log_value(value: Any) -> str:
    """One value of a `key=value` log line, safe for a terminal and for a parser."""
    # 8-bit envelope bytes that were not UTF-8 arrive as surrogate escapes: log them as \xNN
    raw = str(value).encode("utf-8", "surrogateescape")
    text = _LOGSAFE.sub("?", raw.decode("utf-8", "backslashreplace"))
    if not text or any(c in text for c in ' "=\\'):
        return json.dumps(text, ensure_ascii=False)
    return text


class Service:
    """One running front door's shared state: config, scan pool, quarantine, metrics."""

    def __init__(
        self,
        config: Config,
        settings: GatewaySettings,
        *,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        config_loader: Callable[[str | None], Config] = load_config,
    ) -> None:
        self.config = config
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides or {}
        self.engine_factory = engine_factory
        self.config_loader = config_loader
        self.metrics = Metrics()
        self.store = QuarantineStore(settings.quarantine_dir)
        self.scans = ScanService(engine_factory, settings.worker_count, config.engine.scan_timeout)
        self.draining = False
        self.server: asyncio.base_events.Server | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._reloads_asked = 0  # reload requests so far
        self._reloads_covered = 0  # requests made before the latest reload began
        self._reload_result = True

    # ----------------------------------------------------------------------- life cycle

    def _engine_config(self, config: Config, settings: GatewaySettings) -> Config:
        return engine_config_for_serve(
            config, settings.trusted_authserv_ids, dkim_set_by_admin(config)
        )

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def reload(self) -> bool:
        """Re-read config and registry; a config that fails is refused and the old one stays.

        Reloads never overlap. Two at once would build two scan pools side by side, and the
        one that finished last would win even if it had read the older files. A reload
        asked for while another runs waits for it; any number asked for meanwhile are done
        by one reload, which reads the files as they are after the last request."""
        self._reloads_asked += 1
        asked = self._reloads_asked
        async with self._reload_lock:
            if self._reloads_covered >= asked:
                log.info("reload: covered by a reload that began after it was asked for")
                return self._reload_result
            self._reloads_covered = self._reloads_asked
            self._reload_result = await self._reload_now()
            return self._reload_result

    async def _reload_now(self) -> bool:
        old = self.settings
        try:
            config = await asyncio.to_thread(self.config_loader, self.config_path)
            settings = with_overrides(from_config(config), **self.overrides)
            await self.scans.swap(self._engine_config(config, settings))
        except (ConfigError, ScanError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        except Exception as exc:  # a loader bug must not take the gateway down with it
            log.exception("reload refused, keeping the running configuration: %s", exc)
            return False
        for name in RESTART_ONLY:
            if getattr(settings, name) != getattr(old, name):
                log.warning("reload: gateway.%s changed; it takes effect on restart", name)
        self.settings = replace(settings, **{n: getattr(old, n) for n in RESTART_ONLY})
        self.config = config
        log.info("reloaded configuration: %s", ", ".join(config.sources))
        return True

    async def _open(self) -> None:
        """Before listening: the quarantine store, then the scan workers."""
        await asyncio.to_thread(self.store.open)
        self.metrics.quarantine_size.set(await asyncio.to_thread(self.store.count))
        await self.scans.start(self._engine_config(self.config, self.settings))

    async def _drain(self, live: set[Any], what: str, close: Callable[[Any], None]) -> None:
        """Wait, at most drain_timeout, for `live` to empty; then close what is left."""
        deadline = time.monotonic() + self.settings.drain_timeout
        while live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if live:
            log.warning("drain timeout: closing %d %s in flight", len(live), what)
            for item in list(live):
                close(item)

    async def _close(self) -> None:
        """After the last session: background work, scan workers, metrics."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.scans.close()
        await asyncio.to_thread(self.metrics.close)

    def _allowed(self, peer: Any) -> bool:
        """Is a TCP peer inside gateway.allowed_networks?"""
        if not isinstance(peer, tuple) or not peer:
            return False
        try:
            ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.settings.allowed_networks)

    # ----------------------------------------------------------------------- one message

    def handling(self, rcpts: Sequence[str], **front_door: Any) -> actions.Handling:
        """How a worker finishes this message (see actions.Handling); `front_door`: what the
        front door cannot do (a milter's missing capabilities) or how it holds mail."""
        return actions.Handling(
            self.settings, tuple(rcpts), dict(self.config.thresholds), version(), **front_door
        )

    async def scan(
        self, raw: bytes, envelope: Envelope, record: dict[str, Any], handling: actions.Handling
    ) -> Processed | None:
        """The worker's result: our incoming fields stripped, the verdict, the decision and
        the message as it leaves, all done in the worker within the budget, none of it on
        the event loop. None when the scan failed (counted, and said in record); ScanOverrun
        when the message crossed its budget (the caller applies limits.on_overrun)."""
        t_scan = time.monotonic()
        try:
            done = await self.scans.process(raw, envelope, handling)
            if done.verdict.status == "error":
                raise ScanError(done.verdict.error or "engine reported an error")
            return done
        except ScanOverrun:
            raise
        except ScanError as exc:
            self.metrics.scan_errors.inc()
            record.update(verdict="error", error=str(exc))
            return None
        finally:
            self.metrics.scan_seconds.observe(time.monotonic() - t_scan)

    def note_decision(self, decision: actions.Decision, record: dict[str, Any]) -> None:
        """The decision into the message's log line and the metrics."""
        verdict = decision.verdict
        if decision.policy.key:
            record["policy"] = decision.policy.key
        record.update(
            verdict=verdict.verdict,
            action=decision.action,
            score=f"{verdict.score:.2f}",
            brand=verdict.brand.name if verdict.brand else None,
            rules=",".join(f"{f.rule}={f.score:.2f}" for f in verdict.findings) or None,
        )
        self.metrics.messages.labels(verdict.verdict, decision.action).inc()

    def note_overrun(self, reason: str, record: dict[str, Any]) -> str:
        """The overrun into the log line and the metrics; returns `limits.on_overrun`."""
        on_overrun = self.config.limits.on_overrun
        self.metrics.scan_overruns.inc()
        record.update(verdict="overrun", action=on_overrun, error=reason)
        self.metrics.messages.labels("overrun", on_overrun).inc()
        return on_overrun

    async def overrun_marked(self, raw: bytes, verdict: Verdict) -> bytes:
        """An overrun message tagged: header fields only, since a banner would walk the very
        message that overran its budget. (The strip is linear, in a thread: this path is
        taken only where the admin chose tag.)"""
        clean = await asyncio.to_thread(actions.strip_for, self.settings, raw)
        fields = [("X-Brandgate-Status", "overrun"), *actions.tag_fields(verdict)]
        return actions.prepend(clean, fields)

    async def quarantine(
        self,
        raw: bytes,
        envelope: Envelope,
        options: tuple[str, ...],
        client: dict[str, Any],
        verdict: Verdict,
        record: dict[str, Any],
    ) -> str | None:
        """Into brandgate's quarantine, durably; the id, or None (logged, said in record)
        when the store failed, so that the door makes the MTA keep the message."""
        try:
            qid = await asyncio.to_thread(
                self.store.store,
                raw,
                mail_from=envelope.mail_from,
                rcpts=envelope.rcpt_tos,
                mail_options=options,
                client=client,
                verdict=verdict,
            )
        except Exception as exc:  # disk full, permissions: the MTA must keep the message
            log.error("quarantine store failed: %s", exc)
            record["error"] = f"quarantine: {exc}"
            return None
        record["quarantine_id"] = qid
        # a count, not inc(): `brandgate quarantine delete/release` change it behind our back
        with contextlib.suppress(Exception):
            self.metrics.quarantine_size.set(await asyncio.to_thread(self.store.count))
        return str(qid)


class ThreadedGateway:
    """Run a Service (either front door) on its own event loop in a thread (tests, embedding)."""

    def __init__(self, gateway: Service) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        try:
            self.call(self.gateway.start(), timeout=60)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.gateway.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def port(self) -> int:
        return self.gateway.port


async def run_until_signalled(gateway: Service) -> int:
    """Start a front door and run it until SIGTERM / SIGINT (drain, exit 0); SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        await gateway.start()
    except Exception as exc:
        log.error("cannot start: %s", exc)
        await gateway.stop()
        return 1
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        log.info("SIGHUP: reloading configuration")
        task = loop.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("stopping: draining sessions (up to %g s)", gateway.settings.drain_timeout)
    await gateway.stop()
    return 0


__all__ = [
    "OVERRUN_REPLY",
    "TEMPFAIL_REPLY",
    "Service",
    "ThreadedGateway",
    "dkim_set_by_admin",
    "log_value",
    "run_until_signalled",
]
