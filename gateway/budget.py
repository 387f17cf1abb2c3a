"""The per-message budget inside a scan worker: memory by RLIMIT_AS, and how a worker reports.

Every front door scans in worker processes (gateway/scanpool.py for `serve` and the milter,
gateway/archives/parallel.py for `scan` and `replay`) so that the budget can be enforced
from outside: a scan past its time is killed with its worker, a scan past its memory gets
MemoryError (or its worker dies), and in each case the worker is replaced and the message
gets the verdict `limits.on_overrun` names (`Verdict.for_overrun`), never an unscanned pass.
"""

from __future__ import annotations

import logging
import pickle
import resource

log = logging.getLogger("brandgate.budget")

MIB = 1024 * 1024


def address_space() -> int:
    """This process's virtual size in bytes (what RLIMIT_AS counts)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def limit_memory(extra_mb: int) -> int | None:
    """Cap this process's address space at what it holds now plus extra_mb: called once the
    engine is built, so the cap is what one message may cost. Returns the cap (None when the
    system does not let us set one, which is logged: the time budget still holds)."""
    base = address_space()
    if base == 0:
        log.warning("cannot read this process's size: no memory budget for scan workers")
        return None
    cap = base + extra_mb * MIB
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot set RLIMIT_AS for a scan worker: %s", exc)
        return None
    return cap


def peak_rss_mb() -> float:
    """The largest resident size this process has had, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def death(exitcode: int | None) -> str:
    """Why a worker is gone, from its exit code, for the overrun's evidence."""
    if exitcode is not None and exitcode < 0:
        return f"its scan worker died (signal {-exitcode})"
    return f"its scan worker died (exit {exitcode})"


def picklable_error(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (a worker sends it to its parent), else
    a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
