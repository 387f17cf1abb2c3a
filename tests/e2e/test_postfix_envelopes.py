"""The envelope cases of issue 11 through a real Postfix in every mode, for every outcome:
an 8-bit sender without SMTPUTF8, one that is not UTF-8 at all, a control character and a
terminal escape. Each one is delivered with its envelope exactly as sent, or quarantined with
it exactly as sent (brandgate's store keeps bytes that SQLite alone refuses), or deferred with
a 4xx; never a 5xx of brandgate's and never a bounce. (test_postfix_hostile.py checks the
delivered case after the queue.)

Postfix itself refuses some of them in the session before brandgate sees anything
(`501 5.1.7 Bad sender address syntax`, its own check): that is no reply of ours, and it
is the same reply in every mode.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.quarantine import QuarantineStore
from tests.test_relay_hostile import Client

from .postfix import Lab, Proc, milter_proc, wait_until, write_overlay_config
from .test_postfix_after_queue import clean, diagnostics, phish, unique
from .test_postfix_hostile import ENVELOPES

POSTFIX_OWN_REFUSAL = b"501 5.1.7 Bad sender address syntax\r\n"


def send_envelopes(port: int, body: Callable[[str], bytes]) -> dict[str, tuple[bytes, str, bytes]]:
    """Each envelope case in a session of its own: name -> (sender, test id, final reply)."""
    out = {}
    for name, pattern in ENVELOPES.items():
        test_id = unique()
        sender = pattern % test_id.encode()
        c = Client(port)
        c.cmd(b"EHLO client.test.invalid")
        out[name] = (sender, test_id, c.transaction(sender, [b"rcpt@example.test"], body(test_id)))
        c.close()
    return out


def check_replies(sent: dict[str, tuple[bytes, str, bytes]]) -> dict[str, tuple[bytes, str]]:
    """No 5xx but Postfix's own syntax refusal; returns the cases Postfix accepted."""
    for name, (_sender, _id, reply) in sent.items():
        assert reply[:1] in (b"2", b"4") or reply == POSTFIX_OWN_REFUSAL, (name, reply)
    return {n: (s, i) for n, (s, i, r) in sent.items() if r.startswith(b"2")}


def no_bounce_no_5xx(lab: Lab) -> None:
    log = lab.postfix.log_text()
    assert "status=bounced" not in log, [ln for ln in log.splitlines() if "bounced" in ln]
    assert not re.search(r"said: 5\d\d", log), [ln for ln in log.splitlines() if "said: 5" in ln]
    assert not [m for m in lab.maildir.messages() if (m.get("Return-Path") or "") == "<>"]


def delivered_exactly(lab: Lab, accepted: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    outcome = {}
    for name, (sender, test_id) in accepted.items():
        arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
        if arrived:
            assert len(arrived) == 1, name
            assert b"Return-Path: <" + sender + b">\r\n" in arrived[0].body, name
            outcome[name] = "delivered"
        else:
            outcome[name] = "deferred"
    return outcome


def stored_exactly(qdir: Path, accepted: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    """Every accepted case in brandgate's store, with the envelope sender byte for byte."""
    want = {sender: name for name, (sender, _id) in accepted.items()}
    got: dict[str, str] = {}

    def stored() -> bool:
        for sender in stored_senders(qdir):
            if sender in want:
                got[want[sender]] = "quarantined"
        return len(got) == len(want)

    wait_until(stored, 30, 0.3)
    return got


def held_exactly(lab: Lab, accepted: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    """Every accepted case in Postfix's hold queue, its queue file holding the sender as sent."""
    got: dict[str, str] = {}

    def held() -> bool:
        files = [p.read_bytes() for p in (lab.postfix.spool / "hold").rglob("*") if p.is_file()]
        for name, (sender, test_id) in accepted.items():
            if any(test_id.encode() in f and sender in f for f in files):
                got[name] = "held"
        return len(got) == len(accepted)

    wait_until(held, 30, 0.3)
    return got


def stored_senders(qdir: Path) -> list[bytes]:
    """The envelope senders in brandgate's store, as bytes. Postfix's smtp client quotes a
    local part with a control character in it ("a\x01b"@domain), which RFC 5321 says is the
    same address: it is compared unquoted."""
    if not (qdir / "index.sqlite").exists():
        return []
    raw = [e.mail_from.encode("utf-8", "surrogateescape") for e in QuarantineStore(qdir).entries()]
    return [re.sub(rb'^"(.*)"@', rb"\1@", s) for s in raw]


def deferred_said_4xx(lab: Lab, outcome: dict[str, str]) -> None:
    if "deferred" in outcome.values():  # then Postfix keeps it and says why: a 4xx
        assert re.search(r"status=deferred \(.*said: 4\d\d", lab.postfix.log_text()), outcome


@pytest.mark.parametrize(
    ("mode", "verdict"),
    [("after-queue", "quarantine"), ("before-queue", "pass"), ("before-queue", "quarantine")],
)
def test_smtp_modes_relay_or_quarantine_every_envelope_exactly(
    request: pytest.FixtureRequest,
    procs: Callable[[Proc], Proc],
    tmp_path: Path,
    mode: str,
    verdict: str,
) -> None:
    """(Passed mail after the queue: test_postfix_hostile.py.)"""
    lab: Lab = request.getfixturevalue(mode.replace("-", "_") + "_lab")
    qdir = tmp_path / "q"
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=1.0, reject=1000)
    gate = procs(lab.brandgate(qdir, config=config, log_name=f"envelope-{mode}-{verdict}.log"))
    sent = send_envelopes(lab.ports.front, clean if verdict == "pass" else phish)
    accepted = check_replies(sent)
    if verdict == "pass":
        outcome = delivered_exactly(lab, accepted)
        deferred_said_4xx(lab, outcome)
    else:
        outcome = stored_exactly(qdir, accepted)
        want = dict.fromkeys(accepted, "quarantined")
        assert outcome == want, (outcome, stored_senders(qdir), diagnostics(lab, gate))
        assert wait_until(lambda: not lab.postfix.queued(), 30), lab.postfix.queued()
    print(f"{mode}, {verdict}: front door {sent}, outcome {outcome}")
    time.sleep(1.0)
    no_bounce_no_5xx(lab)
    assert len(accepted) >= 3, sent


@pytest.mark.parametrize("quarantine", ["hold", "store"])
def test_milter_envelopes_are_delivered_held_or_stored_exactly(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path, quarantine: str
) -> None:
    lab, qdir = milter_lab, tmp_path / "q"
    extra = f'\n[gateway.milter]\nquarantine = "{quarantine}"\n'
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=1.0, reject=1000,
                                  extra=extra)  # fmt: skip
    log = lab.base / "logs" / f"milter-envelope-{quarantine}.log"
    gate = procs(milter_proc(lab.ports.filter, qdir, log, config))
    passed = check_replies(send_envelopes(lab.ports.front, clean))
    outcome = delivered_exactly(lab, passed)
    assert set(outcome.values()) == {"delivered"}, (outcome, diagnostics(lab, gate))
    flagged_sent = send_envelopes(lab.ports.front, phish)
    flagged = check_replies(flagged_sent)
    held = stored_exactly(qdir, flagged) if quarantine == "store" else held_exactly(lab, flagged)
    print(f"milter ({quarantine}): passed {outcome}, flagged {flagged_sent} -> {held}")
    want = dict.fromkeys(flagged, "quarantined" if quarantine == "store" else "held")
    assert held == want, (held, stored_senders(qdir), diagnostics(lab, gate))
    no_bounce_no_5xx(lab)
    assert len(passed) >= 3 and len(flagged) >= 2


def test_milter_store_keeps_a_sender_that_is_not_utf8_byte_for_byte(
    milter_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab, qdir = milter_lab, tmp_path / "q"
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=1.0, reject=1000,
                                  extra='\n[gateway.milter]\nquarantine = "store"\n')  # fmt: skip
    gate = procs(milter_proc(lab.ports.filter, qdir, lab.base / "logs" / "m-8bit.log", config))
    test_id = unique()
    sender = b"caf\xe9\xff-" + test_id.encode() + b"@sender.test.invalid"
    c = Client(lab.ports.front)
    c.cmd(b"EHLO client.test.invalid")
    reply = c.transaction(sender, [b"rcpt@example.test"], phish(test_id))
    c.close()
    assert reply.startswith(b"250"), reply
    assert wait_until(lambda: bool(stored_senders(qdir)), 30), diagnostics(lab, gate)
    print(f"milter store, sender {sender!r} stored as {stored_senders(qdir)}")
    assert stored_senders(qdir) == [sender]
