"""The fault matrix for the milter (issue 11), against a real Postfix: corpus mail under load
through Postfix with `smtpd_milters` pointing at `brandgate milter` (shipped thresholds, so
every action occurs, and `milter_default_action = tempfail`), while one fault is applied;
then the fault is lifted and Postfix retries.

The mail enters at the lab's relay door, which queues it and relays it into the milter's
front door, as a sending MTA would: a tempfail at the front door (the milter dead, draining
or unable to store) leaves the message in Postfix's queue. Every message sent must then be
accounted for exactly once:

    sent = delivered (sink) + held (Postfix's hold queue, or brandgate's store)
         + rejected (550 5.7.1 at the front door, bounced by the relay door to its sender)
         + still queued at Postfix

with 0 lost, nothing in two places, and no bounce for any reason but a reject verdict.

Faults: the milter down when the load starts (a milter's "next hop down": it has no next
hop, Postfix is its only peer); the milter SIGKILLed; SIGTERM to its process group (as
systemd sends it) with messages in flight; SIGHUP reloads under load; the milter's own
quarantine store (`[gateway.milter] quarantine = "store"`) on a full disk. Marked `faults`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .postfix import (
    SEQ_HEADER,
    Lab,
    LoadResult,
    Proc,
    corpus_files,
    corpus_load,
    milter_proc,
    postfix_bin,
    quarantine_seqs,
    queue_id,
    queue_seqs,
    reloads_answered,
    run_load,
    wait_until,
    write_overlay_config,
)
from .test_postfix_after_queue import diagnostics
from .test_postfix_faults import N_MESSAGES, SESSIONS, deferrals, fill_disk, small_disk, steady

pytestmark = [pytest.mark.faults, pytest.mark.corpus, pytest.mark.timeout(600)]
NOT_HELD = ("maildrop", "incoming", "active", "deferred")
STORE = '\n[gateway.milter]\nquarantine = "store"\n'
_SEQ = re.compile(rb"^" + SEQ_HEADER.encode() + rb":[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


@pytest.fixture(autouse=True)
def _corpus() -> None:
    if len(corpus_files(N_MESSAGES)) < N_MESSAGES:
        pytest.skip("the dev corpus (../shared/corpus/dev) is not here")


def milter(lab: Lab, tmp_path: Path, name: str, qdir: Path, extra: str = "") -> Proc:
    config = write_overlay_config(
        tmp_path / "config", tag=None, quarantine=None, reject=None, extra=extra
    )
    return milter_proc(lab.ports.filter, qdir, lab.base / "logs" / f"milter-{name}.log", config)


# --------------------------------------------------------------------------- accounting


def store_seqs(qdir: Path) -> Counter[str]:
    """X-Test-Seq of the messages brandgate's store indexes (what `quarantine release` can
    release), read without writing to it; the store's message files must be exactly these
    (no orphan left behind by a failed store)."""
    from gateway.quarantine import QuarantineStore

    store = QuarantineStore(qdir)
    if not store.db_path.exists():
        return Counter()
    seqs: Counter[str] = Counter()
    for entry in store.entries():
        m = _SEQ.search(store.raw(entry.id))
        if m:
            seqs[m.group(1).decode(errors="replace")] += 1
    files = quarantine_seqs(qdir)
    assert files == seqs, ("store files and index disagree", files, seqs)
    return seqs


def bounces(lab: Lab) -> dict[str, str]:
    """Queue id -> the reason, for every message Postfix bounced."""
    out = {}
    for line in lab.postfix.log_text().splitlines():
        m = re.search(r": ([0-9A-F]{6,}): to=.*status=bounced \((.*)\)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@dataclass
class Tally:
    delivered: Counter[str]
    held: Counter[str]
    rejected: Counter[str]
    queued: Counter[str]
    other_bounces: dict[str, str]

    def places(self) -> Counter[str]:
        return self.delivered + self.held + self.rejected + self.queued


def tally(lab: Lab, qids: dict[str, str], qdir: Path | None) -> Tally:
    want = set(qids)

    def ours(c: Counter[str]) -> Counter[str]:
        return Counter({k: v for k, v in c.items() if k in want})

    seq_of = {qid: seq for seq, qid in qids.items()}
    bounced = bounces(lab)
    rejected: Counter[str] = Counter()
    other = {}
    for qid, why in bounced.items():
        if qid not in seq_of:
            continue
        if re.search(r"said: 550 5\.7\.1 Message refused", why):
            rejected[seq_of[qid]] += 1
        else:
            other[seq_of[qid]] = why
    held = ours(queue_seqs(lab.postfix, ("hold",)))
    if qdir is not None:
        held += ours(store_seqs(qdir))
    queued = ours(queue_seqs(lab.postfix, NOT_HELD))
    return Tally(ours(lab.maildir.seq_counts()), held, rejected, queued, other)


def queue_empty(lab: Lab) -> bool:
    return not any(p.is_file() for q in NOT_HELD for p in (lab.postfix.spool / q).rglob("*"))


# --------------------------------------------------------------------------- load and settle


@dataclass
class Load:
    """N corpus messages queued at the relay door: seq -> the relay door's queue id."""

    qids: dict[str, str]
    result: LoadResult
    deferred_before: int


def send_load(lab: Lab, tag: str) -> Load:
    before = deferrals(lab)
    messages = corpus_load(N_MESSAGES, f"{tag}-{int(time.time() * 1000) % 10**8}")
    result = run_load(lab.ports.relay, messages, SESSIONS)
    assert not result.failed, {s: (r.code, r.text) for s, r in result.failed.items()}
    qids = {seq: queue_id(r.text) or "" for seq, r in result.results.items()}
    assert all(qids.values()), qids
    return Load(qids, result, before)


def in_flight(lab: Lab, fraction: float = 0.25, timeout: float = 90) -> int:
    """Wait until a part of the load has reached the sink: the milter is busy now."""
    want = lab.maildir.count() + max(1, int(N_MESSAGES * fraction / 2))
    wait_until(lambda: lab.maildir.count() >= want, timeout, 0.05)
    return lab.maildir.count()


def settle(
    lab: Lab, load: Load, name: str, gate: Proc, qdir: Path | None, timeout: float = 240
) -> dict[str, int | float]:
    """Retry now and until every message is accounted for (or nothing moves for a minute);
    then say where each one is and assert that none is lost, doubled or bounced by a fault."""
    t0 = time.monotonic()
    last, since, flushed = -1, t0, 0.0
    while time.monotonic() - t0 < timeout and time.monotonic() - since < 60:
        if time.monotonic() - flushed > 5:
            lab.postfix.flush()
            flushed = time.monotonic()
        moved = lab.maildir.count() + len(bounces(lab))
        if moved != last:
            last, since = moved, time.monotonic()
        if queue_empty(lab) and len(tally(lab, load.qids, qdir).places()) == N_MESSAGES:
            break
        time.sleep(1.0)
    time.sleep(1.0)  # a late duplicate would show now
    t = tally(lab, load.qids, qdir)
    places = t.places()
    figures: dict[str, int | float] = {
        "sent": N_MESSAGES,
        "delivered": sum(t.delivered.values()),
        "held": sum(t.held.values()),
        "rejected": sum(t.rejected.values()),
        "still_queued": sum(t.queued.values()),
        "lost": len([s for s in load.qids if places[s] == 0]),
        "duplicates": sum(n - 1 for n in places.values() if n > 1),
        "bounced_by_fault": len(t.other_bounces),
        "deferred_by_postfix": deferrals(lab) - load.deferred_before,  # what the fault cost
        "seconds": round(time.monotonic() - t0, 1),
    }
    (lab.base / "logs" / f"milter-fault-{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"milter fault {name}: {figures}")
    assert figures["lost"] == 0, (figures, diagnostics(lab, gate))
    assert figures["duplicates"] == 0, (figures, {s: n for s, n in places.items() if n > 1})
    assert not t.other_bounces, t.other_bounces
    total = figures["delivered"] + figures["held"] + figures["rejected"] + figures["still_queued"]
    assert total == N_MESSAGES, figures
    assert figures["still_queued"] == 0, (figures, lab.postfix.log_tail())
    return figures


def release_hold(lab: Lab) -> None:
    """Empty the hold queue between tests (a held message is accounted for, then deleted)."""
    subprocess.run(
        [postfix_bin("postsuper"), "-c", str(lab.postfix.etc), "-d", "ALL", "hold"],
        capture_output=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- the faults


def test_milter_down_when_the_load_starts(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab, qdir = milter_lab, tmp_path / "q"
    load = send_load(lab, "mdown")
    # Postfix tries, the milter port is closed: tempfail, every message stays queued
    deferred = wait_until(lambda: deferrals(lab) - load.deferred_before >= 10, 60)
    assert deferred, lab.postfix.log_tail()
    assert lab.maildir.find(SEQ_HEADER, next(iter(load.qids))) == []
    gate = procs(milter(lab, tmp_path, "down", qdir))
    figures = settle(lab, load, "milter-down", gate, None)
    assert figures["deferred_by_postfix"] >= 10 and figures["delivered"] > 0, figures
    release_hold(lab)


Fault = Callable[[Proc], None]


def restarted_after(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path, name: str, fault: Fault
) -> dict[str, int | float]:
    """The milter under load, `fault` applied to it mid-message, a new one started."""
    qdir = tmp_path / "q"
    gate = procs(milter(lab, tmp_path, f"{name}-1", qdir))
    load = send_load(lab, name)
    in_flight(lab)
    fault(gate)
    time.sleep(2)  # Postfix meets a closed port meanwhile: tempfail
    gate = procs(milter(lab, tmp_path, f"{name}-2", qdir))
    figures = settle(lab, load, name, gate, None)
    assert figures["deferred_by_postfix"] > 0, figures  # the fault did bite
    release_hold(lab)
    return figures


def test_milter_sigkill(milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path) -> None:
    restarted_after(milter_lab, procs, tmp_path, "sigkill", Proc.kill)  # workers too


def test_milter_sigterm_with_messages_in_flight(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    def terminate(gate: Proc) -> None:
        assert gate.popen is not None
        os.killpg(gate.popen.pid, signal.SIGTERM)  # as systemd does: the whole control group
        assert gate.popen.wait(60) == 0, gate.log_tail()  # drained, then a clean exit

    restarted_after(milter_lab, procs, tmp_path, "sigterm", terminate)


def test_milter_sighup_under_load(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab, qdir = milter_lab, tmp_path / "q"
    gate = procs(milter(lab, tmp_path, "hup", qdir))
    load = send_load(lab, "mhup")
    assert gate.popen is not None
    for _ in range(3):
        in_flight(lab, 0.2)
        os.kill(gate.popen.pid, signal.SIGHUP)
    figures = settle(lab, load, "sighup", gate, None)
    assert gate.alive, gate.log_tail()
    # Under load a reload (new engines in every worker) can outlast the load itself: wait for
    # all three to be answered, each logged once it took effect or was covered by the reload
    # after it, none refused.
    reloaded = wait_until(lambda: reloads_answered(gate.log.read_text()) >= 3, 60)
    assert reloaded and "reload refused" not in gate.log.read_text(), gate.log_tail()
    # a reload is not a fault: nothing was tempfailed for it
    assert figures["deferred_by_postfix"] == 0, (figures, lab.postfix.log_tail())
    release_hold(lab)


def test_milter_store_on_a_full_disk(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab = milter_lab
    with small_disk(tmp_path / "disk", "8m") as disk:
        qdir = disk / "q"
        gate = procs(milter(lab, tmp_path, "disk-full", qdir, extra=STORE))
        # the store exists (index made) before the disk fills: only the writes fail
        assert wait_until(lambda: qdir.is_dir() and any(qdir.iterdir()), 20), gate.log_tail()
        filler = fill_disk(disk)
        load = send_load(lab, "mdisk")
        # Messages for the store are tempfailed and wait in Postfix's queue; the others go on
        # to the sink. Wait until that has happened, then make room.
        assert wait_until(lambda: deferrals(lab) > load.deferred_before, 90), diagnostics(lab, gate)
        steady(lambda: lab.maildir.count() + len(bounces(lab)), 5.0)
        waiting = sum(queue_seqs(lab.postfix, NOT_HELD)[s] for s in load.qids)
        stored_while_full = sum(store_seqs(qdir)[s] for s in load.qids)
        filler.unlink()
        figures = settle(lab, load, "store-disk-full", gate, qdir)
        print(
            f"milter fault store-disk-full: while full, {waiting} messages waited at Postfix "
            f"and {stored_while_full} were stored"
        )
        assert waiting > 0 and figures["held"] >= waiting, figures
        gate.stop()
