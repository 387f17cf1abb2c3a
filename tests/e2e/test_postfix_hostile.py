"""Hostile input through a real Postfix (issue 11): padding cannot hide a phish, 8-bit and odd
envelopes are delivered or deferred but never bounced, bare newlines split nothing.

The lab's front door has `local_header_rewrite_clients =` (Postfix does not "fix" what the
client sent, so brandgate scans the bytes the test sent) and, as docs/gateway.md advises,
`smtpd_forbid_bare_newline = normalize` with no exclusions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import padded_phish, phish
from tests.test_relay_hostile import Client

from .postfix import Lab, Proc, brandgate_cli, make_message, wait_until, write_overlay_config
from .test_postfix_after_queue import brandgate_tags, diagnostics, unique


def scan_verdict(raw: bytes, tmp_path: Path, config: Path) -> dict[str, Any]:
    path = tmp_path / f"scan-{unique()}.eml"
    path.write_bytes(raw)
    res = brandgate_cli("scan", str(path), "--format", "jsonl", "-q", "--config", str(config))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def rules_of(tags: dict[str, str]) -> set[str]:
    return {item.split("=")[0].strip() for item in tags.get("X-Brandgate-Rules", "").split(",")}


# 11,000 short fields: past max_headers (each far below Postfix's per-header limit); 70,000:
# a header block over 1 MiB, past max_header_bytes too (the issue's "cut so that From, Subject
# and every other header are lost").
@pytest.mark.parametrize("fields", [11_000, 70_000])
def test_padded_phish_gets_the_bare_ones_verdict_through_postfix(
    after_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path, fields: int
) -> None:
    lab = after_queue_lab
    config = write_overlay_config(tmp_path / "config", tag=4.0, quarantine=1000, reject=2000)
    gate = procs(lab.brandgate(tmp_path / "q", config=config, log_name="padded.log"))
    ids = {"bare": unique(), "padded": unique()}
    messages = {"bare": phish(ids["bare"]), "padded": padded_phish(ids["padded"], fields)}
    if fields > 60_000:
        assert len(messages["padded"]) > 1 << 20
    for name, raw in messages.items():
        c = Client(lab.ports.front)
        c.cmd(b"EHLO client.test.invalid")
        reply = c.transaction(b"sender@sender.test.invalid", [b"rcpt@example.test"], raw)
        c.close()
        assert reply.startswith(b"250"), (name, reply)
    got = {}
    for name, test_id in ids.items():
        arrived = lab.maildir.wait_for("X-Test-Id", test_id, 60)
        assert len(arrived) == 1, (name, diagnostics(lab, gate))
        got[name] = brandgate_tags(arrived[0].headers.items())
    assert got["bare"]["X-Brandgate-Verdict"] == got["padded"]["X-Brandgate-Verdict"] == "tag"
    assert rules_of(got["padded"]) == rules_of(got["bare"]) | {"LIMIT_EXCEEDED"}
    assert got["bare"]["X-Brandgate-Brand"] == got["padded"]["X-Brandgate-Brand"] == "Amazon"
    # ... and `scan` of the very bytes sent says the same, with what was cut
    scanned = {}
    for name, raw in messages.items():
        record = scan_verdict(raw, tmp_path, config)
        assert record["verdict"] == "tag", record
        assert float(got[name]["X-Brandgate-Score"]) == pytest.approx(float(record["score"]))
        scanned[name] = record
    limits = [f for f in scanned["padded"]["findings"] if f["rule"] == "LIMIT_EXCEEDED"]
    assert limits and "max_headers" in str(limits[0]), scanned["padded"]
    if fields > 60_000:
        assert "max_header_bytes" in str(limits[0]), limits
    figures = {
        name: (got[name]["X-Brandgate-Verdict"], got[name]["X-Brandgate-Score"], len(raw))
        for name, raw in messages.items()
    }
    print(f"padded phish ({fields} fields) through Postfix, (verdict, score, bytes): {figures};"
          f" scan's limit finding: {limits[0]}")  # fmt: skip


ENVELOPES = {
    "utf8-no-smtputf8": b"j\xc3\xb6rg-%s@sender.test.invalid",
    "invalid-utf8": b"caf\xe9\xff-%s@sender.test.invalid",
    "control-char": b"a\x01b-%s@sender.test.invalid",
    "terminal-escape": b"a\x1b[31m-%s@sender.test.invalid",
}


def test_envelope_cases_are_delivered_or_deferred_never_bounced(
    after_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab = after_queue_lab
    config = write_overlay_config(tmp_path / "config")
    gate = procs(lab.brandgate(tmp_path / "q", config=config, log_name="envelope.log"))
    accepted: dict[str, tuple[bytes, str]] = {}
    front: dict[str, bytes] = {}
    for name, pattern in ENVELOPES.items():
        test_id = unique()
        sender = pattern % test_id.encode()
        raw = make_message(f"envelope {name}", "hello\n", extra_headers=[("X-Test-Id", test_id)])
        c = Client(lab.ports.front)
        c.cmd(b"EHLO client.test.invalid")
        reply = c.transaction(sender, [b"rcpt@example.test"], raw)
        c.close()
        front[name] = reply
        if reply.startswith(b"250"):
            accepted[name] = (sender, test_id)
    outcome = {}
    for name, (sender, test_id) in accepted.items():
        arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
        if arrived:
            body = arrived[0].body
            assert b"Return-Path: <" + sender + b">" in body, (name, body[:200])
            outcome[name] = "delivered"
        else:
            outcome[name] = "deferred"
    log = lab.postfix.log_text()
    assert "status=bounced" not in log, [ln for ln in log.splitlines() if "bounced" in ln]
    assert not re.search(r"said: 5\d\d", log), [ln for ln in log.splitlines() if "said: 5" in ln]
    # nothing came back to a sender: no message from the null sender at the sink
    assert not [m for m in lab.maildir.messages() if (m.get("Return-Path") or "") == "<>"]
    for name in accepted:
        if outcome[name] == "deferred":  # then Postfix keeps it and says why: a 4xx
            assert "said: 4" in log, diagnostics(lab, gate)
    print(f"envelope cases: front door {front}, outcome {outcome}")
    assert accepted, front


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_bare_newline_smuggling_splits_nothing_at_postfix(
    after_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path, smuggle: bytes
) -> None:
    lab = after_queue_lab
    config = write_overlay_config(tmp_path / "config")
    gate = procs(lab.brandgate(tmp_path / "q", config=config, log_name="smuggle.log"))
    test_id, evil_id = unique(), unique()
    data = (
        f"X-Test-Id: {test_id}\r\nSubject: hi\r\n\r\nbefore".encode()
        + smuggle
        + b"MAIL FROM:<evil@evil.test.invalid>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
        + f"X-Test-Id: {evil_id}\r\nSubject: smuggled\r\n\r\nsmuggled\r\n".encode()
    )
    c = Client(lab.ports.front)
    c.cmd(b"EHLO client.test.invalid")
    for line in (b"MAIL FROM:<a@sender.test.invalid>", b"RCPT TO:<rcpt@example.test>", b"DATA"):
        c.sock.sendall(line + b"\r\n")
    c.sock.sendall(data + b"\r\n.\r\nQUIT\r\n")
    replies = b""
    while chunk := c.sock.recv(65536):
        replies += chunk
    c.close()
    assert replies.count(b"queued as") == 1, replies
    arrived = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(arrived) == 1, diagnostics(lab, gate)
    assert wait_until(lambda: not lab.postfix.queued(), 15)
    assert lab.maildir.find("X-Test-Id", evil_id) == []
