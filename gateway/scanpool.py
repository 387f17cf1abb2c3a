"""Scanning off the event loop: worker processes with one Engine each, and a budget per message.

Parsing and checking are CPU-bound; in worker processes they use both cores and never stall
the SMTP sessions. Each scan has a budget (gateway/budget.py): `engine.scan_timeout` seconds
from the moment a worker takes it, and `limits.worker_memory_mb` of address space (RLIMIT_AS,
set in the worker once its engine is built). A scan that overruns either, or whose worker
dies, fails with ScanOverrun; that one worker is killed and replaced, and the other scans go
on. A reload (SIGHUP) builds a new pool with the new config, warms it up (so a config that
cannot build an engine is refused before anything changes) and swaps it in; the old pool
finishes what it holds, then stops.
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
from dataclasses import dataclass, replace
from typing import Any, Protocol

from config.loader import Config
from filters.types import Envelope, Verdict
from gateway import actions
from gateway.budget import death, limit_memory, picklable_error

log = logging.getLogger("brandgate.scanpool")

# How long a message may wait for a free worker and be scanned, in scan budgets.
QUEUE_WAIT_FACTOR = 3.0


class Scanner(Protocol):
    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict: ...


EngineFactory = Callable[[Config], Scanner]


class ScanError(Exception):
    """The scan did not produce a verdict (internal error, no worker, shutting down)."""


class ScanOverrun(ScanError):
    """The message crossed its budget: time, memory, or its worker died scanning it. Not the
    system's failure but the message's: it gets `limits.on_overrun`, whatever fail_open says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    # Signals are the parent's business: a terminal's Ctrl-C, a SIGHUP to the process group,
    # or systemd's SIGTERM to the whole control group must not kill workers under in-flight
    # scans (the parent drains them, and a dead worker would read as an overrun). A worker
    # ends when its task pipe closes: the parent retired it, or the parent is gone.
    signal.set_wakeup_fd(-1)  # the parent's event loop owns the inherited wakeup pipe
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _scanner = factory(config)


@dataclass(frozen=True, slots=True)
class Processed:
    verdict: Verdict
    clean: bytes | None  # the message without our incoming fields; None: unchanged
    decision: actions.Decision | None = None  # with a Handling and a verdict
    marked: actions.Marked | None = None  # the message as it leaves, where it leaves marked


def _scan(raw: bytes, envelope: Envelope | None, handling: actions.Handling | None) -> Processed:
    if _scanner is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker not initialised")
    if handling is None:
        return Processed(_scanner.scan(raw, envelope), None)
    clean = actions.strip_for(handling.settings, raw)
    verdict = _scanner.scan(clean, envelope)
    decision, marked = actions.finish(clean, verdict, handling)
    return Processed(verdict, None if clean is raw else clean, decision, marked)


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


def _worker_main(
    factory: EngineFactory,
    config: Config,
    tasks: int,
    results: int,
    foreign: list[int],
    memory_mb: int,
) -> None:
    """One worker: build the engine, cap memory, then scan one message per task frame."""
    for fd in foreign:  # the other workers' pipes: their EOFs must not depend on us
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        _init_worker(factory, config)
    except BaseException as exc:
        _send(results, ("init-error", picklable_error(exc)))
        return
    limit_memory(memory_mb)
    _send(results, ("ready", os.getpid()))
    while True:
        head = _read_exactly(tasks, _HEADER.size)
        if head is None:
            return  # the parent closed the pool
        body = _read_exactly(tasks, _HEADER.unpack(head)[0])
        if body is None:
            return
        reply: tuple[str, object] = ("overrun", f"memory budget of {memory_mb} MiB")
        try:
            raw, envelope, handling = pickle.loads(body)
            del body
            reply = ("ok", _scan(raw, envelope, handling))
        except MemoryError:
            pass  # said below, once the except block (and what the scan held) is gone
        except Exception as exc:
            reply = ("error", picklable_error(exc))
        _send(results, reply)
        if reply[0] == "overrun":
            return  # the state a MemoryError left is not to be trusted: the parent starts anew


# --------------------------------------------------------------------------- in the parent


class _Worker:
    """The parent's side of one worker: its pipes, its current task, bytes in transit."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, tasks: int, results: int):
        self.proc = proc
        self.tasks = tasks  # write end, non-blocking
        self.results = results  # read end, non-blocking
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.current: asyncio.Future[Processed] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.outgoing = bytearray()
        self.incoming = bytearray()
        self.closed = False

    @property
    def idle(self) -> bool:
        return self.current is None and not self.closed and self.ready.done()


class _Pool:
    """Worker processes fed over pipes that the event loop watches itself: no helper threads,
    so a message costs the parent one pickle out, one pickle in and two pipe wake-ups."""

    def __init__(
        self,
        factory: EngineFactory,
        config: Config,
        workers: int,
        timeout: float | None = None,
        memory_mb: int | None = None,
    ) -> None:
        self.factory = factory
        self.config = config
        self.timeout = config.engine.scan_timeout if timeout is None else timeout
        self.memory_mb = config.limits.worker_memory_mb if memory_mb is None else memory_mb
        self.loop = asyncio.get_running_loop()
        self.workers: list[_Worker] = []
        self.queue: deque[tuple[bytes, asyncio.Future[Processed]]] = deque()
        self.pending: set[asyncio.Future[Processed]] = set()
        self.broken: str | None = None
        self.replaced = 0  # workers started to replace one that overran or died
        self._reaping: set[asyncio.Task[None]] = set()
        for _ in range(workers):
            self.workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        # fork: workers inherit the loaded config and the factory without pickling them.
        ctx = multiprocessing.get_context("fork")
        ours = [fd for w in self.workers if not w.closed for fd in (w.tasks, w.results)]
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        proc = ctx.Process(
            target=_worker_main,
            args=(
                self.factory,
                self.config,
                task_r,
                res_w,
                [*ours, task_w, res_r],
                self.memory_mb,
            ),
            daemon=True,
        )
        proc.start()
        os.close(task_r)
        os.close(res_w)
        os.set_blocking(task_w, False)
        os.set_blocking(res_r, False)
        worker = _Worker(proc, task_w, res_r)
        self.loop.add_reader(res_r, self._readable, worker)
        return worker

    async def warm_up(self, timeout: float) -> None:
        """Wait until every worker has built its engine; raises if one cannot."""
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.workers)), timeout)

    def submit(
        self, raw: bytes, envelope: Envelope | None, handling: actions.Handling | None = None
    ) -> asyncio.Future[Processed]:
        fut: asyncio.Future[Processed] = self.loop.create_future()
        if self.broken is not None:
            fut.set_exception(ScanError(self.broken))
            return fut
        data = pickle.dumps((raw, envelope, handling), pickle.HIGHEST_PROTOCOL)
        self.pending.add(fut)
        fut.add_done_callback(self.pending.discard)
        self.queue.append((_HEADER.pack(len(data)) + data, fut))
        self._dispatch()
        return fut

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not self.queue:
                return
            if not worker.idle:
                continue
            frame, fut = self.queue.popleft()
            while fut.done() and self.queue:  # given up while queued
                frame, fut = self.queue.popleft()
            if fut.done():
                return
            worker.current = fut
            # The budget runs from the moment a worker takes the message, not while queued.
            worker.deadline = self.loop.call_later(self.timeout, self._timed_out, worker, fut)
            worker.outgoing += frame
            self._write(worker)

    def _write(self, worker: _Worker) -> None:
        try:
            sent = os.write(worker.tasks, worker.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(worker)
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
            self._lost(worker)
            return
        buf = worker.incoming
        buf += chunk
        while len(buf) >= _HEADER.size and not worker.closed:
            size = _HEADER.unpack_from(buf)[0]
            if len(buf) < _HEADER.size + size:
                break
            kind, value = pickle.loads(bytes(buf[_HEADER.size : _HEADER.size + size]))
            del buf[: _HEADER.size + size]
            self._reply(worker, kind, value)

    def _reply(self, worker: _Worker, kind: str, value: Any) -> None:
        if kind == "ready":
            _resolve(worker.ready, value)
            self._dispatch()
            return
        if kind == "init-error":
            _fail(worker.ready, value)
            self._retire_worker(worker)
            if not any(w.ready.done() and not w.closed for w in self.workers):
                self._break(f"scan workers cannot start: {value}")
            return
        if kind == "overrun":
            self._overran(worker, str(value))
            return
        fut = self._finish(worker)
        if fut is not None and not fut.done():
            if kind == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(value)
        self._dispatch()

    def _finish(self, worker: _Worker) -> asyncio.Future[Processed] | None:
        fut, worker.current = worker.current, None
        if worker.deadline is not None:
            worker.deadline.cancel()
            worker.deadline = None
        return fut

    def _timed_out(self, worker: _Worker, fut: asyncio.Future[Processed]) -> None:
        if worker.current is fut and not worker.closed:
            self._overran(worker, f"time budget of {self.timeout:g} s")

    def _overran(self, worker: _Worker, reason: str) -> None:
        """The message in this worker crossed its budget: it fails with ScanOverrun, the
        worker is killed and replaced; nothing else in the pool is touched."""
        fut = self._finish(worker)
        if fut is not None:
            _fail(fut, ScanOverrun(reason))
        log.warning("scan overran its budget (%s): scan worker replaced", reason)
        self._replace(worker)

    def _lost(self, worker: _Worker) -> None:
        """A worker is gone (killed by the OOM killer, a crash in a C extension, a broken
        pipe): the message it held is an overrun; a new worker takes its place."""
        if worker.closed:
            return
        fut = self._finish(worker)
        self._retire_worker(worker)
        exitcode = _exitcode(worker.proc)
        reason = death(exitcode)
        if not worker.ready.done():
            _fail(worker.ready, ScanError(f"a scan worker could not start: {reason}"))
        if fut is not None:
            _fail(fut, ScanOverrun(reason))
        log.warning("%s: replaced", reason)
        if self.broken is None:
            self.workers.append(self._spawn())
            self.replaced += 1
        self._dispatch()

    def _replace(self, worker: _Worker) -> None:
        self._retire_worker(worker, kill=True)
        if self.broken is None:
            self.workers.append(self._spawn())
            self.replaced += 1
        self._dispatch()

    def _retire_worker(self, worker: _Worker, kill: bool = False) -> None:
        self._close_worker(worker)
        if worker in self.workers:
            self.workers.remove(worker)
        if kill and worker.proc.is_alive():
            worker.proc.kill()
        task = self.loop.create_task(_reap(worker.proc))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _break(self, why: str) -> None:
        self.broken = why
        while self.queue:
            _fail(self.queue.popleft()[1], ScanError(why))

    def _close_worker(self, worker: _Worker) -> None:
        if worker.closed:
            return
        worker.closed = True
        if worker.deadline is not None:
            worker.deadline.cancel()
            worker.deadline = None
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
        for worker in list(self.workers):
            current = worker.current
            self._close_worker(worker)  # an idle worker reads EOF and exits
            if current is not None:
                _fail(current, ScanError("scan pool retired"))
        while self.queue:
            _fail(self.queue.popleft()[1], ScanError("scan pool retired"))
        for worker in self.workers:
            await asyncio.to_thread(worker.proc.join, 0.5)
            if worker.proc.is_alive():
                worker.proc.kill()
                await asyncio.to_thread(worker.proc.join, 2.0)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)


def _exitcode(proc: multiprocessing.process.BaseProcess) -> int | None:
    proc.join(0.05)  # it closed its pipe: it is exiting, or gone
    return proc.exitcode


async def _reap(proc: multiprocessing.process.BaseProcess) -> None:
    await asyncio.to_thread(proc.join, 5.0)
    if proc.is_alive():
        proc.kill()
        await asyncio.to_thread(proc.join, 5.0)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: nobody may be waiting for it any more


class ScanService:
    """Scans messages in the current pool; swaps pools on reload."""

    def __init__(self, factory: EngineFactory, workers: int, timeout: float) -> None:
        self.factory = factory
        self.workers = workers
        self.timeout = timeout
        self.config: Config | None = None
        self._pool: _Pool | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def replaced(self) -> int:
        """Workers started in the current pool to replace one that overran or died."""
        return self._pool.replaced if self._pool is not None else 0

    async def start(self, config: Config) -> None:
        await self.swap(config)

    async def swap(self, config: Config) -> None:
        """Build a pool for config and switch to it; the old one keeps serving until then."""
        pool = _Pool(self.factory, config, self.workers)
        try:
            await pool.warm_up(max(30.0, config.engine.scan_timeout))
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
        """The verdict; ScanOverrun when the message crossed its budget; ScanError when
        no verdict could be had for any other reason (internal error, queue wait)."""
        return (await self.process(raw, envelope, None)).verdict

    async def process(
        self, raw: bytes, envelope: Envelope | None, handling: actions.Handling | None
    ) -> Processed:
        """scan, and with `handling` also strip our fields before and decide and mark after,
        all in the worker and within the budget (see actions.Handling)."""
        pool = self._pool
        if pool is None:
            raise ScanError("scan service not started")
        fut = pool.submit(raw, envelope, handling)
        # The budget itself is enforced in the pool, from when a worker takes the message;
        # this bounds the wait for a free worker as well.
        wait = QUEUE_WAIT_FACTOR * self.timeout
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            raise ScanError(f"no scan worker free within {wait:g} s") from None
        except ScanError:
            raise
        except Exception as exc:
            raise ScanError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            self._retire(self._pool)
            self._pool = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
