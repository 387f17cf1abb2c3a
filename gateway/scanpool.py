"""Scanning off the event loop: a process pool with one Engine per worker.

Parsing and checking are CPU-bound; in a process pool they use both cores and never stall the
SMTP sessions. A scan that overruns its budget leaves its worker busy, so the pool it ran in is
retired (its processes are killed once the other scans in it are done) and a fresh pool takes
over. A reload (SIGHUP) builds a new pool with the new config, warms it up (so a config that
cannot build an engine is refused before anything changes) and swaps it in the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Protocol

from config.loader import Config
from filters.types import Envelope, Verdict

log = logging.getLogger("brandgate.scanpool")


class Scanner(Protocol):
    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict: ...


EngineFactory = Callable[[Config], Scanner]


class ScanError(Exception):
    """The scan did not produce a verdict (timeout, crashed worker, internal error)."""


def default_engine_factory(config: Config) -> Scanner:
    """The real engine, with a DNS resolver for DKIM keys when verification is on."""
    from filters.engine import Engine

    dns = None
    if config.engine.verify_dkim:
        try:
            from gateway.dns import make_txt_lookup

            dns = make_txt_lookup(config.engine.dns_timeout)
        except ImportError:
            log.warning("gateway.dns is not available: DKIM signatures are not verified")
    return Engine(config, dns=dns)


def engine_config_for_serve(
    config: Config, trusted_authserv_ids: tuple[str, ...] | None, dkim_set_by_admin: bool
) -> Config:
    """serve verifies DKIM unless the admin's own config says otherwise; flags win."""
    engine = config.engine
    if not dkim_set_by_admin:
        engine = replace(engine, verify_dkim=True)
    if trusted_authserv_ids is not None:
        engine = replace(engine, trusted_authserv_ids=trusted_authserv_ids)
    return replace(config, engine=engine)


# --------------------------------------------------------------------------- in the worker

_scanner: Scanner | None = None


def _init_worker(factory: EngineFactory, config: Config) -> None:
    global _scanner
    # Signals are the parent's business: a terminal's Ctrl-C or a SIGHUP to the process group
    # must not kill workers under in-flight scans.
    signal.set_wakeup_fd(-1)  # the parent's event loop owns the inherited wakeup pipe
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.SIG_IGN)
    _scanner = factory(config)


def _scan(raw: bytes, envelope: Envelope | None) -> Verdict:
    if _scanner is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker not initialised")
    return _scanner.scan(raw, envelope)


def _ping() -> int:
    return os.getpid()


# --------------------------------------------------------------------------- in the parent


class _Pool:
    def __init__(self, factory: EngineFactory, config: Config, workers: int) -> None:
        # fork: workers inherit the loaded config and the factory without pickling them.
        ctx = multiprocessing.get_context("fork")
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(factory, config),
        )
        self.pending: set[Future[Verdict]] = set()

    async def warm_up(self, timeout: float) -> None:
        """Start every worker and build its engine; raises if one cannot."""
        futs = [asyncio.wrap_future(self.executor.submit(_ping)) for _ in range(self.workers)]
        await asyncio.wait_for(asyncio.gather(*futs), timeout)

    def submit(self, raw: bytes, envelope: Envelope | None) -> Future[Verdict]:
        fut = self.executor.submit(_scan, raw, envelope)
        self.pending.add(fut)
        fut.add_done_callback(self.pending.discard)
        return fut

    async def retire(self, grace: float) -> None:
        """Let the scans already in this pool finish (up to grace), then kill what is left."""
        # ProcessPoolExecutor has no public way to stop a stuck task; its processes are ours.
        procs = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=False)
        deadline = time.monotonic() + grace
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            await asyncio.to_thread(proc.join, 2.0)


class ScanService:
    """Scans messages in the current pool; swaps pools on reload or after a stuck scan."""

    def __init__(self, factory: EngineFactory, workers: int, timeout: float) -> None:
        self.factory = factory
        self.workers = workers
        self.timeout = timeout
        self.config: Config | None = None
        self._pool: _Pool | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self, config: Config) -> None:
        await self.swap(config)

    async def swap(self, config: Config) -> None:
        """Build a pool for config and switch to it; the old one keeps serving until then."""
        pool = _Pool(self.factory, config, self.workers)
        try:
            await pool.warm_up(max(30.0, self.timeout))
        except (TimeoutError, Exception) as exc:
            await pool.retire(0.0)
            raise ScanError(f"cannot start scan workers: {type(exc).__name__}: {exc}") from exc
        old, self._pool, self.config = self._pool, pool, config
        self.timeout = config.engine.scan_timeout
        if old is not None:
            self._retire(old)

    def _retire(self, pool: _Pool) -> None:
        task = asyncio.get_running_loop().create_task(pool.retire(self.timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def scan(self, raw: bytes, envelope: Envelope | None) -> Verdict:
        pool = self._pool
        if pool is None:
            raise ScanError("scan service not started")
        fut = pool.submit(raw, envelope)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout)
        except TimeoutError:
            self._replace_stuck(pool)
            raise ScanError(f"scan timed out after {self.timeout:g} s") from None
        except BrokenProcessPool as exc:
            self._replace_stuck(pool)
            raise ScanError(f"scan worker died: {exc}") from exc
        except Exception as exc:
            raise ScanError(f"{type(exc).__name__}: {exc}") from exc

    def _replace_stuck(self, pool: _Pool) -> None:
        if pool is not self._pool or self.config is None:
            return  # already replaced by another session
        log.warning("scan pool replaced: a worker is stuck or died")
        self._pool = _Pool(self.factory, self.config, self.workers)
        self._retire(pool)

    async def close(self) -> None:
        if self._pool is not None:
            self._retire(self._pool)
            self._pool = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
