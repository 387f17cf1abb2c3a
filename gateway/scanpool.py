"""Scanning off the event loop: a process pool with one Engine per worker.

Parsing and checking are CPU-bound; in a process pool they use both cores and never stall the
SMTP sessions. A scan that overruns its budget leaves its worker busy, so the pool it ran in is
retired (its processes are killed once the other scans in it are done) and a fresh pool takes
over. A reload (SIGHUP) builds a new pool with the new config, warms it up (so a config that
cannot build an engine is refused before anything changes) and swaps it in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import pickle
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any, Protocol

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
# Frames on the pipes: an 8-byte length, then a pickle.
_HEADER = struct.Struct("!Q")


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


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(data)) + data)


def _error(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _worker_main(
    factory: EngineFactory, config: Config, tasks: int, results: int, foreign: list[int]
) -> None:
    """One worker: build the engine, then scan one message per task frame until EOF."""
    for fd in foreign:  # the other workers' pipes: their EOFs must not depend on us
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        _init_worker(factory, config)
    except BaseException as exc:
        _send(results, ("init-error", _error(exc)))
        return
    _send(results, ("ready", os.getpid()))
    while True:
        head = _read_exactly(tasks, _HEADER.size)
        if head is None:
            return  # the parent closed the pool
        body = _read_exactly(tasks, _HEADER.unpack(head)[0])
        if body is None:
            return
        raw, envelope = pickle.loads(body)
        try:
            reply: tuple[str, object] = ("ok", _scan(raw, envelope))
        except Exception as exc:
            reply = ("error", _error(exc))
        _send(results, reply)


# --------------------------------------------------------------------------- in the parent


class _Worker:
    """The parent's side of one worker: its pipes, its current task, bytes in transit."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, tasks: int, results: int):
        self.proc = proc
        self.tasks = tasks  # write end, non-blocking
        self.results = results  # read end, non-blocking
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.current: asyncio.Future[Verdict] | None = None
        self.outgoing = bytearray()
        self.incoming = bytearray()
        self.closed = False


class _Pool:
    """Worker processes fed over pipes that the event loop watches itself: no helper threads,
    so a message costs the parent one pickle out, one pickle in and two pipe wake-ups."""

    def __init__(self, factory: EngineFactory, config: Config, workers: int) -> None:
        # fork: workers inherit the loaded config and the factory without pickling them.
        ctx = multiprocessing.get_context("fork")
        self.loop = asyncio.get_running_loop()
        self.workers: list[_Worker] = []
        self.queue: deque[tuple[bytes, asyncio.Future[Verdict]]] = deque()
        self.pending: set[asyncio.Future[Verdict]] = set()
        self.broken: str | None = None
        ours: list[int] = []
        for _ in range(workers):
            task_r, task_w = os.pipe()
            res_r, res_w = os.pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(factory, config, task_r, res_w, [*ours, task_w, res_r]),
                daemon=True,
            )
            proc.start()
            os.close(task_r)
            os.close(res_w)
            os.set_blocking(task_w, False)
            os.set_blocking(res_r, False)
            ours += [task_w, res_r]
            worker = _Worker(proc, task_w, res_r)
            self.workers.append(worker)
            self.loop.add_reader(res_r, self._readable, worker)

    async def warm_up(self, timeout: float) -> None:
        """Wait until every worker has built its engine; raises if one cannot."""
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.workers)), timeout)

    def submit(self, raw: bytes, envelope: Envelope | None) -> asyncio.Future[Verdict]:
        fut: asyncio.Future[Verdict] = self.loop.create_future()
        if self.broken is not None:
            fut.set_exception(BrokenProcessPool(self.broken))
            return fut
        data = pickle.dumps((raw, envelope), pickle.HIGHEST_PROTOCOL)
        self.pending.add(fut)
        fut.add_done_callback(self.pending.discard)
        self.queue.append((_HEADER.pack(len(data)) + data, fut))
        self._dispatch()
        return fut

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not self.queue:
                return
            if worker.current is None and not worker.closed:
                frame, fut = self.queue.popleft()
                if fut.done():  # timed out while queued
                    continue
                worker.current = fut
                worker.outgoing += frame
                self._write(worker)

    def _write(self, worker: _Worker) -> None:
        try:
            sent = os.write(worker.tasks, worker.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(worker, f"scan worker pipe failed: {exc}")
            return
        del worker.outgoing[:sent]
        if worker.outgoing:
            self.loop.add_writer(worker.tasks, self._writable, worker)

    def _writable(self, worker: _Worker) -> None:
        self.loop.remove_writer(worker.tasks)
        if not worker.closed:
            self._write(worker)

    def _readable(self, worker: _Worker) -> None:
        try:
            chunk = os.read(worker.results, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._lost(worker, "a scan worker died")
            return
        buf = worker.incoming
        buf += chunk
        while len(buf) >= _HEADER.size:
            size = _HEADER.unpack_from(buf)[0]
            if len(buf) < _HEADER.size + size:
                break
            kind, value = pickle.loads(bytes(buf[_HEADER.size : _HEADER.size + size]))
            del buf[: _HEADER.size + size]
            self._reply(worker, kind, value)

    def _reply(self, worker: _Worker, kind: str, value: Any) -> None:
        if kind == "ready":
            _resolve(worker.ready, value)
            return
        if kind == "init-error":
            _fail(worker.ready, value)
            return
        fut, worker.current = worker.current, None
        if fut is not None and not fut.done():
            if kind == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._dispatch()

    def _lost(self, worker: _Worker, why: str) -> None:
        """A worker is gone: as with a broken ProcessPoolExecutor, every scan in it fails."""
        self._close_worker(worker)
        self.broken = why
        _fail(worker.ready, BrokenProcessPool(why))
        for other in self.workers:
            if other.current is not None:
                _fail(other.current, BrokenProcessPool(why))
                other.current = None
        while self.queue:
            _fail(self.queue.popleft()[1], BrokenProcessPool(why))

    def _close_worker(self, worker: _Worker) -> None:
        if worker.closed:
            return
        worker.closed = True
        self.loop.remove_reader(worker.results)
        self.loop.remove_writer(worker.tasks)
        for fd in (worker.tasks, worker.results):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def retire(self, grace: float) -> None:
        """Let the scans already in this pool finish (up to grace), then stop what is left."""
        self.broken = self.broken or "scan pool retired"
        deadline = time.monotonic() + grace
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            self._close_worker(worker)  # an idle worker reads EOF and exits
            if worker.current is not None:
                _fail(worker.current, BrokenProcessPool("scan pool retired"))
        for worker in self.workers:
            await asyncio.to_thread(worker.proc.join, 0.5)
            if worker.proc.is_alive():
                worker.proc.kill()
                await asyncio.to_thread(worker.proc.join, 2.0)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: nobody may be waiting for it any more


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
            return await asyncio.wait_for(fut, self.timeout)
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
