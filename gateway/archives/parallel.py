"""Scan a stream of messages in worker processes, results in input order, each within a budget.

    scan_items(items, config_path=..., jobs=N) -> (source, verdict.to_dict()) in input order

Every message is scanned in a worker process, also with jobs=1: that is where the budget of
one message is enforced (gateway/budget.py), as in the gateway: `engine.scan_timeout` seconds
of wall time from the moment a worker starts on it, and `limits.worker_memory_mb` of address
space (RLIMIT_AS). A message that crosses either, or whose worker dies, is reported with the
verdict `limits.on_overrun` names (status "overrun"); its worker is killed and replaced and
the run goes on. Submission is bounded: at most `window` messages are read ahead of the
consumer, and messages travel in batches (one pickle round trip per batch), with one result
frame per message so that each has its own deadline.

Start method: "fork" when the calling process has a single thread, else "forkserver". Fork
starts two workers in ~0.1 s with the engine modules already imported; forkserver and spawn
pay a fresh interpreter and imports (~0.6 s measured here). Fork is unsafe only when another
thread may hold a lock (logging, stdio) at fork time, so a threaded caller gets forkserver,
whose clean server process has preloaded the engine. BRANDGATE_MP_START=fork|forkserver|spawn
overrides.

Ctrl-C: workers ignore SIGINT; the parent stops the workers and lets the KeyboardInterrupt
propagate out of the iterator, after every result already yielded. Callers catch it and write
a partial report.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from filters.sniff import scan_file
from gateway.archives.read import Item
from gateway.budget import death, limit_memory, picklable_error

if TYPE_CHECKING:
    from config.loader import Config
    from filters.types import Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

START_METHOD_ENV = "BRANDGATE_MP_START"  # override: fork, forkserver or spawn
_PRELOAD = ["filters.engine", "gateway.archives.parallel"]
MAX_BATCH = 64


class Scanner(Protocol):
    def scan(self, raw: bytes) -> Verdict: ...


# Builds the per-process scanner from (config_path, trusted_authserv). Must be a module-level
# function so that it pickles by name into the workers.
ScannerFactory = Callable[[str | None, tuple[str, ...]], Scanner]

# Per-process state set by the initializer (one Engine per worker).
_state: dict[str, Any] = {}


# --------------------------------------------------------------------------- engine workers


def build_engine(config_path: str | None, trusted_authserv: tuple[str, ...] = ()) -> Scanner:
    """The real Engine; `trusted_authserv`, when given, replaces the configured ids."""
    from config.loader import load_config

    return engine_from_config(load_config(config_path), trusted_authserv)


def engine_from_config(config: Config, trusted_authserv: Sequence[str] = ()) -> Scanner:
    from config.loader import with_trusted_authserv
    from filters.engine import Engine

    return Engine(with_trusted_authserv(config, trusted_authserv))


def init_scanner(
    config_path: str | None,
    trusted_authserv: tuple[str, ...],
    factory: ScannerFactory | None = None,
    config: Config | None = None,
) -> None:
    """Initializer: build this process's scanner once (from `config` when the caller has
    loaded it already: a forked worker has it for free, where loading costs a second)."""
    if factory is None and config is not None:
        _state["scanner"] = engine_from_config(config, trusted_authserv)
        return
    _state["scanner"] = (factory or build_engine)(config_path, trusted_authserv)


def scan_item(item: Item) -> tuple[str, dict[str, Any]]:
    """Worker function: one message -> (source, record) with this process's scanner."""
    return scan_with(_state["scanner"], item)


def scan_with(scanner: Scanner, item: Item) -> tuple[str, dict[str, Any]]:
    """(source, record); never raises for a bad message."""
    try:
        return item.source, scan_file(scanner, item.raw).to_dict()
    except MemoryError:
        raise  # the budget's: the worker reports an overrun
    except Exception as exc:  # Engine.scan never raises; a fake or a bug must not stop a run
        log.exception("scan failed for %s", item.source)
        return item.source, error_record(exc)


def error_record(exc: BaseException) -> dict[str, Any]:
    from filters.types import Verdict

    return Verdict.for_error(exc).to_dict()


@dataclass(frozen=True, slots=True)
class Budget:
    """What one message may cost in a worker, and what it gets when it costs more."""

    seconds: float
    memory_mb: int
    on_overrun: str = "tempfail"

    @classmethod
    def of(cls, config: Config) -> Budget:
        limits = config.limits
        return cls(config.engine.scan_timeout, limits.worker_memory_mb, limits.on_overrun)


def overrun_record(budget: Budget, reason: str) -> dict[str, Any]:
    from filters.types import Verdict

    return Verdict.for_overrun(reason, budget.on_overrun).to_dict()


def scan_items(
    items: Iterable[Item],
    *,
    config_path: str | None,
    trusted_authserv: Sequence[str] = (),
    jobs: int = 1,
    window: int = 256,
    factory: ScannerFactory | None = None,
    config: Config | None = None,
    start_method: str | None = None,
    budget: Budget | None = None,
) -> Generator[tuple[str, dict[str, Any]], None, None]:
    """(source, verdict.to_dict()) for each item, in input order.

    `factory` replaces the real Engine (tests); `config`, when already loaded by the caller,
    saves loading it again for the budget (workers load from `config_path`). `budget` defaults
    to the configuration's.
    """
    if budget is None:
        budget = Budget.of(config if config is not None else _load(config_path))
    spent = budget

    def overrun(item: Item, reason: str) -> tuple[str, dict[str, Any]]:
        return item.source, overrun_record(spent, reason)

    return map_ordered(
        scan_item,
        items,
        jobs=max(1, jobs),
        window=window,
        initializer=init_scanner,
        initargs=(config_path, tuple(trusted_authserv), factory, config),
        start_method=start_method,
        budget=budget,
        overrun=overrun,
    )


def _load(config_path: str | None) -> Config:
    from config.loader import load_config

    return load_config(config_path)


# --------------------------------------------------------------------------- two configs


def init_pair(config_a: str | None, config_b: str | None, trusted: tuple[str, ...]) -> None:
    """Initializer: this process's two engines, for replay --compare-config."""
    _state["pair"] = (build_engine(config_a, trusted), build_engine(config_b, trusted))


def scan_pair(item: Item) -> tuple[str, dict[str, Any], dict[str, Any]]:
    engine_a, engine_b = _state["pair"]
    return item.source, scan_with(engine_a, item)[1], scan_with(engine_b, item)[1]


def scan_pairs(
    items: Iterable[Item],
    *,
    config_a: str | None,
    config_b: str | None,
    trusted_authserv: Sequence[str] = (),
    jobs: int = 1,
    budget: Budget | None = None,
) -> Generator[tuple[str, dict[str, Any], dict[str, Any]], None, None]:
    """(source, verdict under a, verdict under b) for each item, in input order: one read of
    the archive, both engines in each worker, one budget for the two scans of a message."""
    spent = budget or Budget.of(_load(config_a))

    def overrun(item: Item, reason: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        record = overrun_record(spent, reason)
        return item.source, record, record

    return map_ordered(
        scan_pair,
        items,
        jobs=max(1, jobs),
        initializer=init_pair,
        initargs=(config_a, config_b, tuple(trusted_authserv)),
        budget=Budget(2 * spent.seconds, spent.memory_mb, spent.on_overrun),
        overrun=overrun,
    )


# --------------------------------------------------------------------------- generic ordered map


def map_ordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int = 1,
    window: int = 256,
    batch_size: int | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    start_method: str | None = None,
    budget: Budget | None = None,
    overrun: Callable[[T, str], R] | None = None,
) -> Generator[R, None, None]:
    """fn(item) for each item, in input order, with at most `window` items read ahead.

    `fn` and `initializer` must be module-level functions (they are pickled by name). With a
    budget, `overrun(item, reason)` gives the result of an item that crossed it (time, memory,
    or a dead worker). Without a budget and with jobs=1, both run in this process (the
    initializer once, before the first item). An exception from fn is raised to the caller.
    KeyboardInterrupt stops the workers and propagates to the caller.
    """
    if jobs <= 1 and budget is None:
        return _map_inline(fn, items, initializer, initargs)
    window = max(1, window)
    size = batch_size or max(1, min(MAX_BATCH, window // (max(1, jobs) * 4)))
    pool = _Pool(
        fn,
        max(1, jobs),
        mp_context(start_method),
        (initializer, initargs),
        budget,
        overrun,
    )
    return pool.run(iter(items), window, size)


def _map_inline(
    fn: Callable[[T], R],
    items: Iterable[T],
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
) -> Generator[R, None, None]:
    if initializer is not None:
        initializer(*initargs)
    for item in items:
        yield fn(item)


def mp_context(start_method: str | None = None) -> multiprocessing.context.BaseContext:
    method = start_method or os.environ.get(START_METHOD_ENV) or _default_method()
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    if method == "forkserver":
        # Import the engine once in the server, not once per worker. Ignored (harmlessly) once
        # the server of this process is already running.
        multiprocessing.set_forkserver_preload(_PRELOAD)
    return multiprocessing.get_context(method)


def _default_method() -> str:
    return "fork" if threading.active_count() == 1 else "forkserver"


# --------------------------------------------------------------------------- the workers


def _worker(
    fn: Callable[[Any], Any],
    init: tuple[Callable[..., None] | None, tuple[Any, ...]],
    tasks: Connection,
    results: Connection,
    memory_mb: int | None,
    foreign: list[int],
) -> None:
    """One worker: initialise, cap memory, then one result frame per item of each batch."""
    for fd in foreign:  # forked: the parent's pipe ends, whose EOFs must not depend on us
        with contextlib.suppress(OSError):
            os.close(fd)
    # Ctrl-C goes to the whole process group; only the parent decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer, initargs = init
    try:
        if initializer is not None:
            initializer(*initargs)
    except BaseException as exc:
        results.send_bytes(pickle.dumps(("init-error", -1, picklable_error(exc))))
        return
    # Batches are read by a thread of their own, never by the loop that writes results: the
    # parent sends the next batch while this worker may still be writing results, and if each
    # waited for the other with both pipes full, the two would deadlock (and the parent,
    # blocked in its write, could not even enforce the time budget). The parent keeps at
    # most two batches in flight, so what the thread holds is bounded.
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    threading.Thread(target=_read_batches, args=(tasks, inbox), daemon=True).start()
    if memory_mb is not None:
        limit_memory(memory_mb)
    results.send_bytes(pickle.dumps(("ready", -1, os.getpid())))
    while True:
        frame_in = inbox.get()
        if frame_in is None:
            return
        batch = pickle.loads(frame_in)
        del frame_in
        for seq, item in batch:
            frame = b""
            try:
                frame = pickle.dumps(("ok", seq, fn(item)), pickle.HIGHEST_PROTOCOL)
            except MemoryError:
                pass  # said below, once the except block (and what fn held) is gone
            except Exception as exc:
                frame = pickle.dumps(("error", seq, picklable_error(exc)))
            if not frame:
                results.send_bytes(
                    pickle.dumps(("overrun", seq, f"memory budget of {memory_mb} MiB"))
                )
                return  # its state is not to be trusted: the parent starts a new worker
            results.send_bytes(frame)


def _read_batches(tasks: Connection, inbox: queue.SimpleQueue[bytes | None]) -> None:
    """A worker's reader: every batch frame into `inbox` as it arrives; None at the end."""
    try:
        while True:
            inbox.put(tasks.recv_bytes())
    except (EOFError, OSError):
        inbox.put(None)


@dataclass(eq=False)
class _Slot:
    """The parent's side of one worker and the batch it holds."""

    proc: multiprocessing.process.BaseProcess
    tasks: Connection
    results: Connection
    ready: bool = False
    batch: deque[tuple[int, Any]] = field(default_factory=deque)  # sent, not yet answered
    since: float = 0.0  # when the item now at the head of the batch was started


class _Pool(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[T], R],
        jobs: int,
        ctx: multiprocessing.context.BaseContext,
        init: tuple[Callable[..., None] | None, tuple[Any, ...]],
        budget: Budget | None,
        overrun: Callable[[T, str], R] | None,
    ) -> None:
        self.fn = fn
        self.ctx = ctx
        self.init = init
        self.budget = budget
        self.overrun = overrun
        self.selector = selectors.DefaultSelector()
        self.slots: list[_Slot] = []
        for _ in range(jobs):
            self.slots.append(self._spawn())
        self.todo: deque[tuple[int, T]] = deque()
        self.done: dict[int, tuple[str, Any]] = {}
        self.replaced = 0

    def _spawn(self) -> _Slot:
        task_r, task_w = self.ctx.Pipe(duplex=False)
        res_r, res_w = self.ctx.Pipe(duplex=False)
        memory = self.budget.memory_mb if self.budget is not None else None
        foreign = []
        if self.ctx.get_start_method() == "fork":
            theirs = [c for slot in self.slots for c in (slot.tasks, slot.results)]
            foreign = [c.fileno() for c in (*theirs, task_w, res_r) if not c.closed]
        process: Any = self.ctx.Process  # type: ignore[attr-defined]
        proc = process(
            target=_worker,
            args=(self.fn, self.init, task_r, res_w, memory, foreign),
            daemon=True,
        )
        proc.start()
        task_r.close()
        res_w.close()
        slot = _Slot(proc, task_w, res_r)
        self.selector.register(res_r, selectors.EVENT_READ, slot)
        return slot

    def run(self, source: Iterator[T], window: int, batch_size: int) -> Generator[R, None, None]:
        seq = 0
        following = 0
        exhausted = False
        clean = False
        try:
            while True:
                while not exhausted and seq - following < window:
                    item = next(source, _END)
                    if item is _END:
                        exhausted = True
                        break
                    self.todo.append((seq, item))  # type: ignore[arg-type]
                    seq += 1
                while following in self.done:
                    kind, value = self.done.pop(following)
                    following += 1
                    if kind == "error":
                        raise value
                    yield value
                if exhausted and following == seq:
                    break
                if following in self.done or (not exhausted and seq - following < window):
                    continue  # yield what is ready, read ahead what the window allows
                self._dispatch(batch_size)
                self._wait()
            clean = True
        finally:
            self._stop(clean)

    def _dispatch(self, batch_size: int) -> None:
        for slot in self.slots:
            if not self.todo:
                return
            # A second batch goes out before the first is done, so that no worker waits for
            # the parent; the head of `batch` is always the item the worker is on.
            if slot.ready and len(slot.batch) <= batch_size // 2:
                batch = [self.todo.popleft() for _ in range(min(batch_size, len(self.todo)))]
                if not slot.batch:
                    slot.since = time.monotonic()
                slot.batch.extend(batch)
                try:
                    slot.tasks.send_bytes(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
                except OSError:
                    self._lost(slot)

    def _wait(self) -> None:
        timeout = None
        if self.budget is not None:
            busy = [s.since + self.budget.seconds for s in self.slots if s.batch]
            if busy:
                timeout = max(0.0, min(busy) - time.monotonic())
        for key, _events in self.selector.select(timeout):
            slot = key.data
            # Every frame already there, not one per wake-up.
            while slot in self.slots and slot.results.poll(0):
                self._receive(slot)
        if self.budget is not None:
            now = time.monotonic()
            for slot in list(self.slots):
                if slot.batch and now - slot.since >= self.budget.seconds:
                    self._overran(slot, f"time budget of {self.budget.seconds:g} s")

    def _receive(self, slot: _Slot) -> None:
        try:
            kind, seq, value = pickle.loads(slot.results.recv_bytes())
        except (EOFError, OSError):
            self._lost(slot)
            return
        if kind == "ready":
            slot.ready = True
            return
        if kind == "init-error":
            raise value
        if kind == "overrun":
            self._overran(slot, value)
            return
        if slot.batch and slot.batch[0][0] == seq:
            slot.batch.popleft()
        slot.since = time.monotonic()
        self.done[seq] = ("error" if kind == "error" else "ok", value)

    def _overran(self, slot: _Slot, reason: str) -> None:
        """The item at the head of this worker's batch crossed its budget: it gets the
        overrun result; the worker is killed and replaced, the rest of its batch re-queued."""
        seq, item = slot.batch.popleft()
        log.warning("message %d overran its budget (%s): scan worker replaced", seq, reason)
        if self.overrun is None:
            self.done[seq] = ("error", RuntimeError(f"budget crossed: {reason}"))
        else:
            self.done[seq] = ("ok", self.overrun(item, reason))
        self._replace(slot)

    def _lost(self, slot: _Slot) -> None:
        slot.proc.join(1.0)
        if not slot.ready:
            raise RuntimeError(f"a scan worker could not start ({death(slot.proc.exitcode)})")
        if slot.batch:
            self._overran(slot, death(slot.proc.exitcode))
        else:
            self._replace(slot)

    def _replace(self, slot: _Slot) -> None:
        self.todo.extendleft(reversed(slot.batch))
        slot.batch.clear()
        _kill(slot)
        self.selector.unregister(slot.results)
        slot.tasks.close()
        slot.results.close()
        self.slots[self.slots.index(slot)] = self._spawn()
        self.replaced += 1

    def _stop(self, clean: bool) -> None:
        # Normal end: workers read EOF and exit. Ctrl-C, an early close() by the caller, or
        # an error: stop them now.
        for slot in self.slots:
            if not slot.tasks.closed:
                slot.tasks.close()
            if not clean:
                _kill(slot)
        for slot in self.slots:
            slot.proc.join(5.0)
            if slot.proc.is_alive():
                _kill(slot)
            if not slot.results.closed:
                self.selector.unregister(slot.results)
                slot.results.close()
        self.selector.close()


def _kill(slot: _Slot) -> None:
    if slot.proc.is_alive():
        slot.proc.kill()
    slot.proc.join(5.0)


_END = object()
