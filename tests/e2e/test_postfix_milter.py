"""brandgate as Postfix's milter (smtpd_milters), end to end against a real Postfix.

client (smtplib) -> Postfix front door -(milter protocol)- brandgate milter -> Postfix queue ->
sink (Maildir). A second door queues mail and relays it into the first, as mail from the
internet would come, so a tempfail there is seen as Postfix keeping the message.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from tests.test_dkim import dict_dns, rsa_keypair

from .postfix import (
    Lab,
    Proc,
    _proc_stats,
    brandgate_cli,
    corpus_files,
    corpus_load,
    held_seqs,
    milter_proc,
    postfix_bin,
    queue_id,
    run_load,
    send,
    wait_until,
    write_overlay_config,
)
from .test_postfix_after_queue import brandgate_tags, clean, diagnostics, phish, unique

DKIM_KEY, DKIM_RECORD = rsa_keypair(7)
DKIM_DNS = dict_dns({"lab._domainkey.sender.test.invalid": DKIM_RECORD})


@pytest.fixture(scope="module")
def lab(milter_lab: Lab) -> Lab:
    return milter_lab


def start_milter(
    lab: Lab,
    procs: Callable[[Proc], Proc],
    tmp: Path,
    name: str,
    extra: str = "",
    engine: str = "",
    **th: float,
) -> Proc:
    thresholds = {"tag": 0.5, "quarantine": 50.0, "reject": 100.0, **th}
    config = write_overlay_config(tmp / "config", extra=extra, **thresholds)
    if engine:
        main = config / "brandgate.toml"
        main.write_text(main.read_text().replace("[engine]\n", f"[engine]\n{engine}\n"))
    log = lab.base / "logs" / f"milter-{name}.log"
    return procs(milter_proc(lab.ports.filter, tmp / "quarantine", log, config))


def as_sent(delivered: bytes) -> tuple[bytes, bytes]:
    """(the fields brandgate inserted, the message as the client sent it): what is above and
    what is below Postfix's own Received:, without the 3 lines the sink put on top."""
    rest = delivered.split(b"\r\n", 3)[3] if b"\r\n" in delivered else delivered
    lines = rest.split(b"\r\n")
    i = next((k for k, ln in enumerate(lines) if ln.startswith(b"Received:")), None)
    assert i is not None, rest[:400]
    j = i + 1
    while lines[j][:1] in (b" ", b"\t"):
        j += 1
    ours = b"".join(ln + b"\r\n" for ln in lines[:i])
    return ours, b"\r\n".join(lines[j:])


def postsuper(lab: Lab, *args: str) -> None:
    subprocess.run(
        [postfix_bin("postsuper"), "-c", str(lab.postfix.etc), *args],
        capture_output=True,
        timeout=60,
        check=True,
    )


def test_clean_mail_keeps_its_bytes_and_dkim_and_lures_are_tagged(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    """Passed mail: header fields inserted on top and every byte the client sent below them,
    so the sender's DKIM signature verifies; with pass_headers = false not even those."""
    gate = start_milter(lab, procs, tmp_path, "tag", extra="\n[gateway]\nbanner = true\n")
    ids = {"clean": unique(), "phish": unique()}
    body = clean(ids["clean"])
    signed_headers = [b"from", b"to", b"subject"]
    signed = (
        dkim.sign(body, b"lab", b"sender.test.invalid", DKIM_KEY, include_headers=signed_headers)
        + body
    )
    assert dkim.verify(signed, dnsfunc=DKIM_DNS)

    r_clean = send(lab.ports.front, signed)
    r_phish = send(lab.ports.front, phish(ids["phish"]))
    assert r_clean.code == 250 and r_phish.code == 250, (r_clean, r_phish)
    got_clean = lab.maildir.wait_for("X-Test-Id", ids["clean"], 30)
    got_phish = lab.maildir.wait_for("X-Test-Id", ids["phish"], 30)
    assert len(got_clean) == 1 and len(got_phish) == 1, diagnostics(lab, gate)

    delivered = got_clean[0].body
    ours, sent = as_sent(delivered)
    assert sent == signed, "what the client sent must arrive byte for byte"
    assert ours.startswith(b"X-Brandgate-Status: pass score="), ours
    status = b" ".join(ours.split(b"\r\nX-Brandgate-Verdict:")[0].split())  # unfolded
    assert b" required=0.50 rules=" in status, ours
    assert b"X-Brandgate-Verdict: pass\r\n" in ours
    assert dkim.verify(delivered, dnsfunc=DKIM_DNS), "the signature broke on the way"

    tags = brandgate_tags(got_phish[0].headers.items())
    assert tags.get("X-Brandgate-Verdict") == "tag", tags
    assert tags.get("X-Brandgate-Brand") == "Amazon"
    # the banner (on here; off by default), in the shipped English text
    lure = email.message_from_bytes(got_phish[0].body, policy=email.policy.default)
    plain = lure.get_body(("plain",))
    assert plain is not None, got_phish[0].body[:2000]
    text = " ".join(plain.get_content().split())
    assert text.startswith("[brandgate] Caution: this message presents itself as Amazon"), text
    # the verdict fields sit above Postfix's own Received:, as after the queue
    assert got_phish[0].body.split(b"\r\n")[3].startswith(b"X-Brandgate-Status: tag ")

    gate.stop()
    gate = start_milter(
        lab, procs, tmp_path / "off", "pass-off", extra="\n[gateway]\npass_headers = false\n"
    )
    test_id = unique()
    body = clean(test_id)
    assert send(lab.ports.front, body).code == 250
    got = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(got) == 1, diagnostics(lab, gate)
    assert as_sent(got[0].body) == (b"", body), "passed mail must arrive byte for byte"


def test_reject_is_550_in_the_session_and_nothing_is_queued(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    gate = start_milter(lab, procs, tmp_path, "reject", quarantine=4.5, reject=5.0)
    test_id = unique()
    reply = send(lab.ports.front, phish(test_id))
    assert reply.code == 550 and reply.text.startswith("5.7.1 Message refused"), reply
    assert "Amazon" in reply.text
    time.sleep(1.0)
    assert lab.maildir.find("X-Test-Id", test_id) == [], diagnostics(lab, gate)
    assert not lab.postfix.queued()


def test_quarantine_in_postfix_hold_queue_then_released(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    gate = start_milter(lab, procs, tmp_path, "hold", quarantine=1.0)
    test_id = unique()
    reply = send(lab.ports.front, phish(test_id))
    qid = queue_id(reply.text)
    assert reply.code == 250 and qid, reply
    assert wait_until(lambda: qid in [p.name for p in (lab.postfix.spool / "hold").glob("*")], 15)
    held = subprocess.run(
        [postfix_bin("postcat"), "-c", str(lab.postfix.etc), "-h", "-q", qid],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "X-Brandgate-Verdict: quarantine" in held, held
    time.sleep(1.0)
    assert lab.maildir.find("X-Test-Id", test_id) == [], diagnostics(lab, gate)

    postsuper(lab, "-H", qid)  # the admin releases it
    lab.postfix.flush()
    arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(arrived) == 1, diagnostics(lab, gate)
    assert arrived[0].get("X-Brandgate-Verdict") == "quarantine"


def test_quarantine_in_brandgate_store_then_released(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    extra = '\n[gateway.milter]\nquarantine = "store"\n'
    gate = start_milter(lab, procs, tmp_path, "store", extra=extra, quarantine=1.0)
    test_id, sender = unique(), f"q-{unique()}@sender.test.invalid"
    reply = send(lab.ports.front, phish(test_id), mail_from=sender)
    assert reply.code == 250, reply
    qdir = tmp_path / "quarantine"
    listing = brandgate_cli("quarantine", "list", "--json", "--quarantine-dir", str(qdir))
    entries = [json.loads(ln) for ln in listing.stdout.splitlines() if ln.strip()]
    assert [e["mail_from"] for e in entries] == [sender], listing.stdout + listing.stderr
    assert wait_until(lambda: not lab.postfix.queued(), 15), lab.postfix.queued()
    time.sleep(1.0)
    assert lab.maildir.find("X-Test-Id", test_id) == [], diagnostics(lab, gate)

    # released to the re-injection door, which runs no milter
    res = brandgate_cli(
        "quarantine", "release", str(entries[0]["id"]), "--by", "e2e", "--reason", "test",
        "--quarantine-dir", str(qdir), "--config", str(tmp_path / "config"),
        "--next-hop", f"127.0.0.1:{lab.ports.reinject}",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(arrived) == 1 and arrived[0].get("Return-Path") == f"<{sender}>"


def scan_workers(gate: Proc) -> list[int]:
    assert gate.popen is not None
    return [pid for pid, f in _proc_stats() if int(f[1]) == gate.popen.pid]


def test_scan_failure_is_a_tempfail_and_postfix_keeps_the_message(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    """The scan workers hang (SIGSTOP): the scan overruns engine.scan_timeout."""
    gate = start_milter(lab, procs, tmp_path, "fail", engine="scan_timeout = 2.0")
    # warm: the pool is up and has scanned
    assert send(lab.ports.front, clean(unique())).code == 250

    def hang_workers() -> None:
        pids = scan_workers(gate)
        assert pids, "no scan workers found"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)

    hang_workers()
    direct = send(lab.ports.front, clean(unique()))
    assert direct.code == 451 and direct.text.startswith("4.3.0"), direct

    # from the queue: Postfix's smtp client gets the 451 and keeps the message
    assert wait_until(lambda: bool(scan_workers(gate)), 15)  # the replaced pool
    hang_workers()
    test_id = unique()
    reply = send(lab.ports.relay, clean(test_id))
    qid = queue_id(reply.text)
    assert reply.code == 250 and qid, reply

    def deferred() -> bool:
        return any(
            qid in ln and "status=deferred" in ln and "451 4.3.0" in ln
            for ln in lab.postfix.log_text().splitlines()
        )

    assert wait_until(deferred, 30, 0.2), diagnostics(lab, gate)
    assert qid in lab.postfix.queued()
    # the stuck pool is replaced by itself; the retry goes through, once
    lab.postfix.flush()
    arrived = lab.maildir.wait_for("X-Test-Id", test_id, 60)
    if not arrived:
        lab.postfix.flush()
        arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(arrived) == 1, diagnostics(lab, gate)
    assert wait_until(lambda: qid not in lab.postfix.queued(), 15)
    time.sleep(2.0)
    assert len(lab.maildir.find("X-Test-Id", test_id)) == 1, "duplicate delivery"


N_MESSAGES = 200
SESSIONS = 4


@pytest.mark.corpus
def test_200_corpus_messages_none_lost_or_duplicated(
    lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    if len(corpus_files(N_MESSAGES)) < N_MESSAGES:
        pytest.skip("the dev corpus (../shared/corpus/dev) is not here")
    # the shipped thresholds, so that every verdict and action occurs
    config = write_overlay_config(tmp_path / "config", tag=None, quarantine=None, reject=None)
    log = lab.base / "logs" / "milter-load.log"
    gate = procs(milter_proc(lab.ports.filter, tmp_path / "q", log, config))
    messages = corpus_load(N_MESSAGES, f"mload-{unique()}")
    seqs = [s for s, _ in messages]

    load = run_load(lab.ports.front, messages, SESSIONS)
    rejected = [s for s, r in load.failed.items() if r.code == 550 and r.text.startswith("5.7.1")]
    errors = {s: (r.code, r.text) for s, r in load.failed.items() if s not in rejected}
    want = set(load.accepted)

    def counts() -> tuple[Counter[str], Counter[str]]:
        sink = lab.maildir.seq_counts()
        held = held_seqs(lab.postfix)
        return (
            Counter({k: v for k, v in sink.items() if k in want}),
            Counter({k: v for k, v in held.items() if k in want}),
        )

    sink: Counter[str] = Counter()
    held: Counter[str] = Counter()

    def settled() -> bool:
        nonlocal sink, held
        sink, held = counts()
        return set(sink) | set(held) >= want and not [
            q for q in lab.postfix.queued() if not (lab.postfix.spool / "hold" / q).exists()
        ]

    wait_until(settled, 180, 1.0)
    time.sleep(1.0)
    sink, held = counts()
    figures = {
        "sent": len(seqs),
        "delivered": sum(sink.values()),
        "held": sum(held.values()),
        "rejected": len(rejected),
        "errors": len(errors),
        "lost": len([s for s in want if sink[s] + held[s] == 0]),
        "duplicates": sum(n - 1 for n in (sink + held).values() if n > 1),
        "seconds": round(load.finished - load.started, 1),
    }
    (lab.base / "logs" / "milter-loss-check.json").write_text(json.dumps(figures, indent=2))
    print(f"milter loss check: {figures}")
    postsuper(lab, "-d", "ALL", "hold")

    assert not errors, errors
    assert figures["lost"] == 0, (figures, diagnostics(lab, gate))
    assert figures["duplicates"] == 0, figures
    assert figures["delivered"] + figures["held"] + figures["rejected"] == N_MESSAGES, figures
    assert figures["held"] and figures["rejected"] and figures["delivered"], figures
