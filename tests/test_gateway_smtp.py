"""The gateway over real sockets: smtplib client -> brandgate (in-process) -> aiosmtpd sink."""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.quarantine import QuarantineStore
from tests.test_gateway_support import (
    free_port,
    message,
    raising_factory,
    running_gateway,
    sink,
)

pytestmark = pytest.mark.timeout(60)


def send(
    port: int,
    data: bytes,
    rcpts: tuple[str, ...] = ("bob@rcpt.example",),
    mail_from: str = "alice@sender.example",
    options: tuple[str, ...] = (),
    xforward: str | None = None,
) -> tuple[int, bytes]:
    """One transaction; returns the DATA reply (or the first refusal)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.test.invalid")
        if xforward:
            code, msg = c.docmd("XFORWARD", xforward)
            assert code == 250, msg
        code, msg = c.mail(mail_from, list(options))
        if code != 250:
            return code, msg
        for r in rcpts:
            code, msg = c.rcpt(r)
            assert code == 250, msg
        return c.data(data)


def quarantine_entries(tmp: Path) -> list:
    return QuarantineStore(tmp / "quarantine").open().entries()


def test_clean_message_is_relayed_unchanged_with_its_envelope(tmp_path: Path) -> None:
    body = "Grüße aus Köln, 8-bit body.\r\n.leading dot line\r\n"
    data = message(body=body)
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        code, reply = send(
            gw.port,
            data,
            rcpts=("bob@rcpt.example", "carol@rcpt.example", "dave@other.example"),
            options=("BODY=8BITMIME", "SMTPUTF8"),
        )
        assert (code, reply) == (250, b"2.0.0 Ok: queued as SINK42")
        assert len(hop.messages) == 1
        got = hop.messages[0]
        # Headers only: the message itself follows byte for byte (DKIM stays valid).
        assert got.data.endswith(data)
        added = got.data[: -len(data)].split(b"\r\n")
        assert added[0] == b"X-Brandgate-Status: pass score=0.00 required=4.00 rules=none"
        assert all(ln.startswith((b"X-Brandgate-", b" ")) for ln in added if ln)
        assert got.mail_from == "alice@sender.example"
        assert got.rcpts == ["bob@rcpt.example", "carol@rcpt.example", "dave@other.example"]
        assert "BODY=8BITMIME" in got.options and "SMTPUTF8" in got.options
        assert any(o.startswith("SIZE=") for o in got.options)


def test_null_sender_and_xforward_are_passed_on(tmp_path: Path) -> None:
    banner = (
        "banner = true\n[gateway.banner_texts.en]\n"
        'brand = "{brand}? {summary}"\ngeneric = "{summary}"\n'
    )
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port, gateway=banner) as gw:
        code, _ = send(
            gw.port,
            message(verdict="tag", subject="Testbrand"),
            mail_from="",
            xforward="NAME=mx.client.example ADDR=192.0.2.7 HELO=client.example IDENT=4XyZ12",
        )
        assert code == 250
        got = hop.messages[0]
        assert got.mail_from == "<>"
        assert got.xforward["ADDR"] == "192.0.2.7"
        assert got.xforward["IDENT"] == "4XyZ12"
        # the engine saw the original client, not Postfix's loopback address (the fake
        # engine writes its envelope into the summary, which the banner quotes)
        assert b"client=192.0.2.7; helo=client.example" in got.data.replace(b"\r\n", b" ")
        assert b"X-Brandgate-Verdict: tag" in got.data


def test_tagged_message_gets_headers_and_one_banner_and_loses_forged_tags(
    tmp_path: Path,
) -> None:
    data = message(
        subject="Testbrand",
        verdict="tag",
        extra="X-Brandgate-Verdict: pass\r\nX-BRANDGATE-Score:\r\n -5\r\n",
    )
    gateway = "banner = true\nspam_headers = true\n"
    extra = "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n"
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port, gateway=gateway) as gw:
        assert (
            send(gw.port, data.replace(b"\r\n\r\n", b"\r\n" + extra.encode() + b"\r\n", 1))[0]
            == 250
        )
        out = hop.messages[0].data
    head, _, body = out.partition(b"\r\n\r\n")
    # forged verdicts, ours and SpamAssassin-style, are gone: only what we wrote is there
    assert head.count(b"X-Spam-Flag:") == 1 and b"X-Spam-Flag: YES\r\n" in head
    assert head.count(b"X-Spam-Status:") == 1 and b"score=-100" not in head
    assert b"X-Spam-Status: Yes, score=9.5 required=4.0" in head.replace(b"\r\n ", b" ")
    assert head.count(b"X-Brandgate-Verdict:") == 1
    assert b"X-Brandgate-Verdict: tag" in head
    assert b"X-Brandgate-Score: 9.50" in head
    assert b"X-Brandgate-Rules: BRAND_SENDER_UNVERIFIED=6.00, LINK_DIVERSION=3.50" in head
    assert b"X-Brandgate-Brand: Testbrand" in head
    assert b"-5" not in head
    assert body.replace(b"\r\n", b" ").count(b"presents itself as Testbrand, but brandgate") == 1
    assert body.endswith(b"Just a normal note.\r\nSecond line.\r\n")


def test_crlf_in_subject_cannot_forge_headers_in_the_tags(tmp_path: Path) -> None:
    # The decoded Subject (our fake engine's brand name) carries CR/LF, NUL and a header line.
    evil = "=?utf-8?q?Amazon=0D=0AX-Brandgate-Verdict:_pass=0D=0ABcc:_x@evil.example=00?="
    data = message(subject=evil, verdict="tag", extra="From: =?utf-8?q?a=0D=0AX-Evil:_1?=\r\n")
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        assert send(gw.port, data)[0] == 250
        out = hop.messages[0].data
    head = out.partition(b"\r\n\r\n")[0]
    names = [
        line.split(b":", 1)[0].lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    assert names.count(b"x-brandgate-verdict") == 1
    assert b"bcc" not in names and b"x-evil" not in names
    assert b"\x00" not in head
    assert all(line.isascii() for line in head.split(b"\r\n") if line.startswith(b"X-Brandgate"))
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_quarantined_message_is_stored_privately_and_not_relayed(tmp_path: Path) -> None:
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        code, reply = send(
            gw.port, message(verdict="quarantine"), rcpts=("a@x.example", "b@y.example")
        )
        assert code == 250 and b"quarantine" in reply
        assert hop.messages == []
    entries = quarantine_entries(tmp_path)
    assert len(entries) == 1
    e = entries[0]
    assert e.rcpts == ("a@x.example", "b@y.example") and e.verdict == "quarantine"
    qdir = tmp_path / "quarantine"
    assert stat.S_IMODE(os.stat(qdir).st_mode) == 0o700
    f = qdir / "messages" / f"{e.id}.eml"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(qdir / "index.sqlite").st_mode) == 0o600
    assert f.read_bytes() == message(verdict="quarantine")


def test_reject_is_550_before_queue_and_quarantine_after_queue(tmp_path: Path) -> None:
    with sink() as (hop, hop_port):
        with running_gateway(tmp_path / "b", hop_port, mode="before-queue") as gw:
            code, reply = send(gw.port, message(verdict="reject"))
            assert code == 550 and reply.startswith(b"5.7.1 ")
        with running_gateway(tmp_path / "a", hop_port, mode="after-queue") as gw:
            code, _ = send(gw.port, message(verdict="reject"))
            assert code == 250
        assert hop.messages == []
    assert quarantine_entries(tmp_path / "b") == []
    assert [e.verdict for e in quarantine_entries(tmp_path / "a")] == ["reject"]


def test_next_hop_down_gives_451(tmp_path: Path) -> None:
    with sink() as (_hop, dead_port):
        pass  # the port is free again: nothing listens there
    with running_gateway(tmp_path, dead_port) as gw:
        code, reply = send(gw.port, message())
        assert code == 451 and reply.startswith(b"4.4.1")


@pytest.mark.parametrize(
    ("hop_reply", "code"),
    [("452 4.3.1 Insufficient system storage", 452), ("554 5.7.0 Rejected by policy", 554)],
)
def test_next_hop_refusals_are_passed_back(tmp_path: Path, hop_reply: str, code: int) -> None:
    with sink(reply=hop_reply) as (_hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        got, reply = send(gw.port, message())
        assert (got, reply.decode()) == (code, hop_reply[4:])


def test_slow_next_hop_gives_451(tmp_path: Path) -> None:
    with (
        sink(delay=3.0) as (_hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="relay_timeout = 0.5") as gw,
    ):
        code, reply = send(gw.port, message())
        assert code == 451 and reply.startswith(b"4.4.2")


def test_oversize_message_gets_552_and_nothing_is_stored(tmp_path: Path) -> None:
    big = message(verdict="quarantine", body="x" * 70 + "\r\n") * 1 + (b"y" * 70 + b"\r\n") * 200
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="data_size_limit = 4096") as gw,
    ):
        code, reply = send(gw.port, big)
        assert code == 552 and reply.startswith(b"5.3.4")
        # a declared SIZE over the limit is refused at MAIL already
        code, _ = send(gw.port, message(), options=("SIZE=999999",))
        assert code == 552
        assert hop.messages == []
    assert quarantine_entries(tmp_path) == []


def _raw_session(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(payload)
        answer = b""
        # no half-close: EOF during DATA processing would abort the session
        while b"\r\n221 " not in answer and (chunk := s.recv(65536)):
            answer += chunk
    return answer


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_smuggling_sequences_do_not_split_a_message(tmp_path: Path, smuggle: bytes) -> None:
    body = (
        b"Subject: hi\r\n\r\nbefore"
        + smuggle
        + b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<victim@rcpt.example>\r\nDATA\r\n"
        + b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
    )
    payload = (
        b"EHLO client.test.invalid\r\nMAIL FROM:<alice@sender.example>\r\n"
        b"RCPT TO:<bob@rcpt.example>\r\nDATA\r\n" + body + b".\r\nQUIT\r\n"
    )
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        answer = _raw_session(gw.port, payload)
        assert answer.count(b"\r\n250 2.0.0 Ok: queued as SINK42") == 1
        assert len(hop.messages) == 1
        got = hop.messages[0]
        assert got.mail_from == "alice@sender.example" and got.rcpts == ["bob@rcpt.example"]
        assert b"smuggled body" in got.data  # it stayed inside the one message


def test_client_outside_allowed_networks_is_refused(tmp_path: Path) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway='allowed_networks = ["10.0.0.0/8"]') as gw,
    ):
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        assert err.value.smtp_code == 554
        assert hop.messages == []


def test_session_limit_gives_421(tmp_path: Path) -> None:
    with (
        sink() as (_hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="max_sessions = 2") as gw,
    ):
        first = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        second = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        assert err.value.smtp_code == 421
        first.quit()
        second.quit()


def test_scan_failure_is_451_when_fail_closed(tmp_path: Path) -> None:
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        code, reply = send(gw.port, message(extra="X-Test-Raise: 1\r\n"))
        assert code == 451 and reply.startswith(b"4.3.0")
        code, _ = send(gw.port, message(extra="X-Test-Status: error\r\n"))
        assert code == 451
        assert hop.messages == []


def test_scan_failure_passes_with_status_header_when_fail_open(tmp_path: Path) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="fail_open = true") as gw,
    ):
        code, _ = send(gw.port, message(extra="X-Test-Raise: 1\r\n"))
        assert code == 250
        assert hop.messages[0].data.startswith(b"X-Brandgate-Status: error\r\n")


def test_scan_timeout_is_451_and_the_pool_recovers(tmp_path: Path) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, engine="scan_timeout = 0.5") as gw,
    ):
        code, reply = send(gw.port, message(extra="X-Test-Sleep: 30\r\n"))
        assert code == 451 and reply.startswith(b"4.3.0")
        code, _ = send(gw.port, message())
        assert code == 250
        assert len(hop.messages) == 1


def test_engine_that_cannot_start_is_refused(tmp_path: Path) -> None:
    with (
        sink() as (_hop, hop_port),
        pytest.raises(Exception, match="cannot start scan workers"),
        running_gateway(tmp_path, hop_port, factory=raising_factory),
    ):
        pass


def test_reload_with_bad_config_keeps_the_old_one(tmp_path: Path) -> None:
    with sink() as (hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        conf = tmp_path / "conf" / "brandgate.toml"
        conf.write_text('[gateway]\nmode = "sideways"\n')
        assert gw.call(gw.gateway.reload()) is False
        assert gw.gateway.settings.mode == "after-queue"
        assert send(gw.port, message())[0] == 250
        conf.write_text('[gateway]\n[gateway.actions]\ntag = "quarantine"\n')
        assert gw.call(gw.gateway.reload()) is True
        assert send(gw.port, message(verdict="tag"))[0] == 250
        assert len(hop.messages) == 1  # the tag went to quarantine under the new config
    assert [e.verdict for e in quarantine_entries(tmp_path)] == ["tag"]


def test_reloads_asked_for_at_once_run_one_after_another_and_the_newest_files_win(
    tmp_path: Path,
) -> None:
    with sink() as (_hop, hop_port), running_gateway(tmp_path, hop_port) as gw:
        conf = tmp_path / "conf" / "brandgate.toml"
        service = gw.gateway
        load = service.config_loader
        loads: list[Any] = []
        first_read = threading.Event()
        release = threading.Event()

        def slow_first(path: str | None) -> Any:
            config = load(path)  # the files as they are now
            loads.append(config)
            if len(loads) == 1:
                first_read.set()
                release.wait(30)  # a first reload still warming up its pool
            return config

        service.config_loader = slow_first
        conf.write_text('[gateway]\n[gateway.actions]\ntag = "quarantine"\n')
        first = asyncio.run_coroutine_threadsafe(service.reload(), gw.loop)
        assert first_read.wait(30)
        conf.write_text('[gateway]\n[gateway.actions]\ntag = "reject"\n')
        later = [asyncio.run_coroutine_threadsafe(service.reload(), gw.loop) for _ in range(4)]
        time.sleep(0.3)
        assert len(loads) == 1  # the later ones wait for the first
        release.set()
        assert first.result(60) is True
        assert [f.result(60) for f in later] == [True] * 4
        assert len(loads) == 2  # four requests, one reload, reading the newest file
        assert service.settings.actions["tag"] == "reject"


def test_hundred_concurrent_sessions(tmp_path: Path) -> None:
    n = 100
    codes: list[int] = []
    lock = threading.Lock()
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="max_sessions = 150") as gw,
    ):
        start = threading.Barrier(n)

        def one(i: int) -> None:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=60) as c:
                start.wait(30)
                c.ehlo("c.test.invalid")
                c.mail("alice@sender.example")
                c.rcpt(f"u{i}@rcpt.example")
                code, _ = c.data(message(subject=f"n{i}"))
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes == [250] * n
        assert sorted(m.rcpts[0] for m in hop.messages) == sorted(
            f"u{i}@rcpt.example" for i in range(n)
        )


def test_metrics_endpoint_counts_messages(tmp_path: Path) -> None:
    mport = free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    want = 'brandgate_messages_total{action="tag",verdict="tag"} 1.0'
    with (
        sink() as (_hop, hop_port),
        running_gateway(tmp_path, hop_port, metrics=f"127.0.0.1:{mport}") as gw,
    ):
        assert send(gw.port, message(verdict="tag"))[0] == 250
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        # Only the metrics path answers (issue 10): not /, not /metrics/x, not /favicon.ico.
        for path in ("/", "/metrics/x", "/favicon.ico", "/?name[]=x"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=5)
            assert err.value.code == 404
    assert want in text
    assert "brandgate_scan_seconds_bucket" in text
    assert "brandgate_sessions_active" in text
    # process metrics, as every Prometheus exporter has them
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
