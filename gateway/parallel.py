"""Scan a stream of messages with N processes, results in input order, in bounded memory.

    scan_items(items, config_path=..., jobs=N) -> (source, verdict.to_dict()) in input order

jobs=1 scans in this process. jobs>1 uses a ProcessPoolExecutor whose initializer builds one
Engine per worker. Submission is bounded: at most `window` messages are read ahead of the
consumer (Pool.imap would drain the whole archive into its task queue), and messages travel in
batches so that the pickling round trip is paid once per batch, not per message.

Why ProcessPoolExecutor rather than multiprocessing.Pool: a worker killed by the OOM killer or
a crash in a C extension makes the executor raise BrokenProcessPool, where Pool waits forever
for the lost task.

Start method: "fork" when the calling process has a single thread, else "forkserver". Fork
starts two workers in ~0.1 s with the engine modules already imported; forkserver and spawn
pay a fresh interpreter and imports (~0.6 s measured here), a third of a dev-corpus scan. Fork
is unsafe only when another thread may hold a lock (logging, stdio) at fork time, so a
threaded caller gets forkserver, whose clean server process has preloaded the engine.
(ProcessPoolExecutor on 3.11 forks all workers before starting its own manager thread.)
BRANDGATE_MP_START=fork|forkserver|spawn overrides.

Ctrl-C: workers ignore SIGINT; the parent cancels what is queued, stops the workers and lets
the KeyboardInterrupt propagate out of the iterator, after every result already yielded.
Callers catch it and write a partial report.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from filters.sniff import scan_file
from gateway.archive import Item

if TYPE_CHECKING:
    from config.loader import Config
    from filters.types import Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

START_METHOD_ENV = "BRANDGATE_MP_START"  # override: fork, forkserver or spawn
_PRELOAD = ["filters.engine", "gateway.parallel"]
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
) -> None:
    """Initializer: build this process's scanner once."""
    _state["scanner"] = (factory or build_engine)(config_path, trusted_authserv)


def scan_item(item: Item) -> tuple[str, dict[str, Any]]:
    """Worker function: one message -> (source, record) with this process's scanner."""
    return scan_with(_state["scanner"], item)


def scan_with(scanner: Scanner, item: Item) -> tuple[str, dict[str, Any]]:
    """(source, record); never raises for a bad message."""
    try:
        return item.source, scan_file(scanner, item.raw).to_dict()
    except Exception as exc:  # Engine.scan never raises; a fake or a bug must not stop a run
        log.exception("scan failed for %s", item.source)
        return item.source, error_record(exc)


def error_record(exc: BaseException) -> dict[str, Any]:
    from filters.types import Verdict

    return Verdict.for_error(exc).to_dict()


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
) -> Generator[tuple[str, dict[str, Any]], None, None]:
    """(source, verdict.to_dict()) for each item, in input order.

    `factory` replaces the real Engine (tests); `config`, when already loaded by the caller,
    saves loading it again for jobs=1 (workers always load from `config_path`). With jobs=1
    each call has its own scanner, so several streams can run side by side in one process.
    """
    trusted = tuple(trusted_authserv)
    if jobs <= 1:
        return _scan_inline(items, config_path, trusted, factory, config)
    return map_ordered(
        scan_item,
        items,
        jobs=jobs,
        window=window,
        initializer=init_scanner,
        initargs=(config_path, trusted, factory),
        start_method=start_method,
    )


def _scan_inline(
    items: Iterable[Item],
    config_path: str | None,
    trusted: tuple[str, ...],
    factory: ScannerFactory | None,
    config: Config | None,
) -> Generator[tuple[str, dict[str, Any]], None, None]:
    # Its own scanner, not the per-process slot: two in-process streams (replay's config diff)
    # must not share one.
    if factory is not None:
        scanner = factory(config_path, trusted)
    elif config is not None:
        scanner = engine_from_config(config, trusted)
    else:
        scanner = build_engine(config_path, trusted)
    for item in items:
        yield scan_with(scanner, item)


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
) -> Generator[R, None, None]:
    """fn(item) for each item, in input order, with at most `window` items read ahead.

    `fn` and `initializer` must be module-level functions (they are pickled by name). With
    jobs=1 both run in this process (the initializer once, before the first item).
    KeyboardInterrupt stops the workers and propagates to the caller.
    """
    if jobs <= 1:
        return _map_inline(fn, items, initializer, initargs)
    window = max(1, window)
    size = batch_size or max(1, min(MAX_BATCH, window // (jobs * 4)))
    return _map_pool(fn, items, jobs, window, size, initializer, initargs, start_method)


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


def _worker_init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    # Ctrl-C goes to the whole process group; only the parent decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def _run_batch(fn: Callable[[T], R], batch: list[T]) -> list[R]:
    return [fn(item) for item in batch]


def _map_pool(
    fn: Callable[[T], R],
    items: Iterable[T],
    jobs: int,
    window: int,
    batch_size: int,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
    start_method: str | None,
) -> Generator[R, None, None]:
    executor = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=mp_context(start_method),
        initializer=_worker_init,
        initargs=(initializer, initargs),
    )
    pending: deque[tuple[Future[list[R]], int]] = deque()
    in_flight = 0
    source = iter(items)
    exhausted = False
    clean = False
    try:
        while True:
            while not exhausted and (not pending or in_flight + batch_size <= window):
                batch = list(itertools.islice(source, batch_size))
                if not batch:
                    exhausted = True
                    break
                pending.append((executor.submit(_run_batch, fn, batch), len(batch)))
                in_flight += len(batch)
            if not pending:
                break
            future, count = pending.popleft()
            results = future.result()
            in_flight -= count
            yield from results
        clean = True
    finally:
        # Normal end: workers exit after their (empty) queue. Ctrl-C, an early close() by the
        # caller, or an error: drop what is queued and stop the workers now.
        if clean:
            executor.shutdown(wait=True)
        else:
            _abort(executor, pending)


def _abort(executor: ProcessPoolExecutor, pending: deque[tuple[Future[Any], int]]) -> None:
    for future, _count in pending:
        future.cancel()
    # The executor has no public way to stop busy workers (terminate_workers() is 3.14+).
    processes = dict(getattr(executor, "_processes", None) or {})
    for proc in processes.values():
        if proc.is_alive():
            proc.terminate()
    executor.shutdown(wait=True, cancel_futures=True)
