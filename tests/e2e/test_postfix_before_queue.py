"""brandgate as Postfix's before-queue proxy filter (smtpd_proxy_filter), end to end.

The sending client talks to Postfix, Postfix proxies the session to brandgate, and brandgate's
answer to DATA is what the client sees: 550 5.7.1 for a reject verdict, nothing queued.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.hostile import continuation_lines
from tests.test_relay_hostile import Client

from .postfix import Lab, Proc, send, wait_until, write_overlay_config
from .test_postfix_after_queue import brandgate_tags, clean, diagnostics, phish, unique


def test_reject_is_550_in_session_and_clean_mail_arrives(
    before_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab = before_queue_lab
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=4.5, reject=5.0)
    qdir = tmp_path / "quarantine"
    gate = procs(lab.brandgate(qdir, config=config, log_name="before.log"))
    ids = {"clean": unique(), "phish": unique()}

    rejected = send(lab.ports.front, phish(ids["phish"]))
    assert rejected.code == 550, rejected
    assert rejected.text.startswith("5.7.1"), rejected

    passed = send(lab.ports.front, clean(ids["clean"]))
    assert passed.code == 250, passed
    arrived = lab.maildir.wait_for("X-Test-Id", ids["clean"], 30)
    assert len(arrived) == 1, diagnostics(lab, gate)
    tags = brandgate_tags(arrived[0].headers.items())  # a pass, said in headers only
    assert tags.get("X-Brandgate-Verdict") == "pass", tags

    # The rejected one is nowhere: not delivered, not queued, not quarantined.
    assert wait_until(lambda: not lab.postfix.queued(), 15)
    assert lab.maildir.find("X-Test-Id", ids["phish"]) == []
    assert not list(qdir.rglob("*.eml"))


def test_very_long_line_is_not_a_permanent_failure(
    before_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    """Postfix alone accepts any line length (it splits them); a proxy in front of it must
    not turn real mail with one huge line (such exist in the corpus) into a 5xx bounce."""
    lab = before_queue_lab
    config = write_overlay_config(tmp_path / "config")
    gate = procs(lab.brandgate(tmp_path / "q", config, log_name="long-line.log"))
    test_id = unique()
    raw = clean(test_id).replace(b"usual place?", b"usual place? " + b"x" * 70_000)

    reply = send(lab.ports.front, raw)
    assert reply.code == 250, reply
    assert len(lab.maildir.wait_for("X-Test-Id", test_id, 30)) == 1, diagnostics(lab, gate)


def probe_session(port: int, test_id: str) -> dict[str, float | int]:
    """One short client session through Postfix: seconds to Postfix's 220, to the answer to
    MAIL (Postfix opens its proxy connection to brandgate at MAIL: this waits for brandgate's
    220 and EHLO) and to the end of DATA; and the final reply code."""
    t0 = time.monotonic()
    c = Client(port)
    greeting = time.monotonic() - t0
    c.cmd(b"EHLO probe.test.invalid")
    assert c.cmd(b"MAIL FROM:<probe@sender.test.invalid>").startswith(b"250")
    mail = time.monotonic() - t0
    assert c.cmd(b"RCPT TO:<rcpt@example.test>").startswith(b"250")
    assert c.cmd(b"DATA").startswith(b"354")
    reply = c.cmd(clean(test_id) + b".")
    c.cmd(b"QUIT")
    c.close()
    return {"greeting": greeting, "mail": mail, "total": time.monotonic() - t0,
            "code": int(reply[:3]), "start": t0}  # fmt: skip


def test_other_clients_are_served_while_a_10mb_hostile_message_is_scanned(
    before_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    """Issue 11, defect 3, through Postfix: the message that froze every session for 30 s (an
    X-Brandgate-* field over one header of 1.4 million continuation lines, 9.7 MB) is being
    scanned; meanwhile other clients' sessions through Postfix reach brandgate within 1 s."""
    lab = before_queue_lab
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=50, reject=100)
    gate = procs(lab.brandgate(tmp_path / "q", config, log_name="frozen.log",
                               extra=["--workers", "2"]))  # fmt: skip
    hostile = continuation_lines(1_400_000, random.Random(0))
    assert len(hostile) > 9_500_000
    c = Client(lab.ports.front)
    c.cmd(b"EHLO attacker.test.invalid")
    assert c.cmd(b"MAIL FROM:<a@sender.test.invalid>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<rcpt@example.test>").startswith(b"250")
    assert c.cmd(b"DATA").startswith(b"354")
    sent_at: list[float] = []
    replies: list[bytes] = []

    def upload() -> None:
        c.sock.sendall(hostile.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        sent_at.append(time.monotonic())
        replies.append(c.reply())

    sender = threading.Thread(target=upload)
    t_start = time.monotonic()
    sender.start()
    probes = []
    while sender.is_alive() and time.monotonic() - t_start < 150:
        probes.append(probe_session(lab.ports.front, unique()))
        time.sleep(0.05)
    sender.join(30)
    c.close()
    t_end = time.monotonic()
    assert replies and replies[0].startswith(b"250"), replies  # scanned and relayed
    during_scan = [p for p in probes if sent_at and p["start"] >= sent_at[0]]
    figures = {
        "hostile_bytes": len(hostile),
        "upload_s": round(sent_at[0] - t_start, 2) if sent_at else None,
        "scan_and_relay_s": round(t_end - sent_at[0], 2) if sent_at else None,
        "probes": len(probes),
        "probes_after_upload": len(during_scan),
        "max_greeting_ms": round(1000 * max(p["greeting"] for p in probes)),
        "max_to_brandgate_ms": round(1000 * max(p["mail"] for p in probes)),
        "max_session_ms": round(1000 * max(p["total"] for p in probes)),
    }
    print(f"before the queue, 10 MB hostile message: {figures}")
    assert all(p["code"] == 250 for p in probes), probes
    assert len(during_scan) >= 3, (figures, diagnostics(lab, gate))
    assert max(p["mail"] for p in probes) < 1.0, figures
