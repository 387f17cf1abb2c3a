"""The per-message budget on every front door (issue 11): time and memory, enforced by the scan
workers; an overrun is the verdict `limits.on_overrun` names, never an unscanned pass.

A stand-in scanner makes the overruns on demand (X-Test-Sleep, X-Test-Alloc, X-Test-Die), so
these tests are about the workers and the front doors, not about what costs the engine much.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from config.loader import Config
from filters.types import Envelope, Verdict
from gateway.archives.parallel import Budget, Scanner, scan_items
from gateway.archives.read import Item
from gateway.quarantine import QuarantineStore
from tests.test_gateway_smtp import send
from tests.test_gateway_support import FakeScanner, message, running_gateway, sink

pytestmark = pytest.mark.timeout(120)
MIB = 1024 * 1024


class Costly(FakeScanner):
    """FakeScanner, plus X-Test-Alloc: N (MiB to allocate) and X-Test-Die (kill the worker)."""

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        head = raw.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.startswith(b"X-Test-Alloc:"):
                blob = bytearray(int(line.split(b":")[1]) * MIB)
                blob[::4096] = b"x" * len(blob[::4096])
            if line.startswith(b"X-Test-Die:"):
                os.kill(os.getpid(), signal.SIGKILL)
        return super().scan(raw, envelope)


def costly_factory(config: Config) -> Costly:
    return Costly()


def costly_scanner(config_path: str | None, trusted: tuple[str, ...]) -> Scanner:
    return _Offline()


class _Offline:
    """scan(raw) as `brandgate scan` calls it."""

    def scan(self, raw: bytes) -> Verdict:
        return Costly().scan(raw)


def items() -> list[Item]:
    return [
        Item("ok-1", message(verdict="tag")),
        Item("slow", message(extra="X-Test-Sleep: 60\r\n")),
        Item("ok-2", message()),
        Item("fat", message(extra="X-Test-Alloc: 8192\r\n")),
        Item("ok-3", message(verdict="tag")),
        Item("dies", message(extra="X-Test-Die: 1\r\n")),
        Item("ok-4", message()),
    ]


@pytest.mark.parametrize(("jobs", "on_overrun"), [(1, "quarantine"), (2, "tag")])
def test_scan_reports_overruns_and_goes_on(jobs: int, on_overrun: str) -> None:
    budget = Budget(seconds=1.0, memory_mb=256, on_overrun=on_overrun)
    got = dict(
        scan_items(
            iter(items()),
            config_path=None,
            jobs=jobs,
            factory=costly_scanner,
            budget=budget,
            window=8,
        )
    )
    assert list(got) == [i.source for i in items()]
    assert [got[s]["verdict"] for s in ("ok-1", "ok-2", "ok-3", "ok-4")] == [
        "tag",
        "pass",
        "tag",
        "pass",
    ]
    for source, why in [("slow", "time budget of 1 s"), ("fat", "memory budget of 256 MiB")]:
        assert got[source]["status"] == "overrun", got[source]
        assert got[source]["error"] == why
    assert got["dies"]["status"] == "overrun" and "signal 9" in got["dies"]["error"]
    for source in ("slow", "fat", "dies"):
        assert got[source]["verdict"] == on_overrun
        assert got[source]["findings"][0]["rule"] == "LIMIT_EXCEEDED"


def _gateway_send(port: int, extra: str, out: dict[str, tuple[int, bytes]], key: str) -> None:
    out[key] = send(port, message(verdict="tag", extra=extra))


@pytest.mark.parametrize("on_overrun", ["tempfail", "quarantine", "tag"])
def test_gateway_overrun_is_the_configured_verdict_even_with_fail_open(
    tmp_path: Path, on_overrun: str
) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(
            tmp_path,
            hop_port,
            engine="scan_timeout = 1.0",
            gateway="fail_open = true",
            extra=f"[limits]\nworker_memory_mb = 256\non_overrun = '{on_overrun}'\n",
            factory=costly_factory,
        ) as gw,
    ):
        replies = {
            name: send(gw.port, message(verdict="pass", extra=extra))
            for name, extra in [
                ("slow", "X-Test-Sleep: 60\r\n"),
                ("fat", "X-Test-Alloc: 8192\r\n"),
                ("dies", "X-Test-Die: 1\r\n"),
            ]
        }
        after = send(gw.port, message())  # the replaced workers scan on
        relayed = list(hop.messages)
    assert after[0] == 250
    codes = {name: code for name, (code, _text) in replies.items()}
    held = QuarantineStore(tmp_path / "quarantine").open().entries()
    if on_overrun == "tempfail":
        assert codes == {"slow": 451, "fat": 451, "dies": 451}
        assert all(r[1].startswith(b"4.3.0") for r in replies.values())
        assert len(relayed) == 1 and held == []
    elif on_overrun == "quarantine":
        assert codes == {"slow": 250, "fat": 250, "dies": 250}
        assert len(relayed) == 1
        assert sorted(e.findings["status"] for e in held) == ["overrun"] * 3
    else:
        assert codes == {"slow": 250, "fat": 250, "dies": 250}
        tagged = relayed[:3]
        assert all(m.data.startswith(b"X-Brandgate-Status: overrun\r\n") for m in tagged)
        assert all(b"X-Brandgate-Verdict: tag\r\n" in m.data for m in tagged)
        assert held == []
    # fail_open = true never turned an overrun into an unmarked pass
    assert not any(b"X-Brandgate" not in m.data for m in relayed[:-1])


def test_one_overrun_does_not_disturb_the_other_scans(tmp_path: Path) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(
            tmp_path, hop_port, engine="scan_timeout = 6.0", factory=costly_factory, workers=2
        ) as gw,
    ):
        out: dict[str, tuple[int, bytes]] = {}
        slow = threading.Thread(
            target=_gateway_send, args=(gw.port, "X-Test-Sleep: 60\r\n", out, "s")
        )
        slow.start()
        # The other worker takes every other message while the slow one holds its own.
        for i in range(5):
            assert send(gw.port, message(subject=f"n{i}"))[0] == 250
        assert slow.is_alive()
        slow.join(30)
        assert out["s"][0] == 451
        assert gw.gateway.scans.replaced == 1
        assert send(gw.port, message())[0] == 250
    assert len(hop.messages) == 6


def square(n: int) -> int:
    return n * n


@pytest.mark.parametrize(("jobs", "window", "batch"), [(1, 1, 1), (1, 2, 1), (2, 3, 2), (2, 64, 8)])
def test_budgeted_map_keeps_order_for_any_window(jobs: int, window: int, batch: int) -> None:
    from gateway.archives.parallel import map_ordered

    got = map_ordered(
        square, range(40), jobs=jobs, window=window, batch_size=batch, budget=Budget(30, 512)
    )
    assert list(got) == [n * n for n in range(40)]


def echo_big(item: bytes) -> bytes:
    return item[:1] * 20_000  # a 20 KB result: a verdict with long evidence lists


def test_big_messages_and_big_verdicts_do_not_deadlock_the_pool() -> None:
    """The parent sends a worker its next batch (here 32 × 100 KB) while the worker is still
    writing the results of the last one (20 KB each): with both pipes full, the two waited
    for each other for ever, and the time budget could not fire (the parent was stuck in
    its write). A near miss of the same shape, small items, always passed."""
    from gateway.archives.parallel import map_ordered

    items = [bytes([65 + i % 26]) * 100_000 for i in range(400)]
    out: list[bytes] = []

    def consume() -> None:
        out.extend(map_ordered(echo_big, items, jobs=2, budget=Budget(30, 1024)))

    runner = threading.Thread(target=consume, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), f"the pool deadlocked after {len(out)} of {len(items)} results"
    assert out == [item[:1] * 20_000 for item in items]
