"""The milter front door over real sockets: a test MTA (tests/milter_mta.py) -> brandgate's
milter in-process, with the fake engine of the SMTP gateway tests choosing verdicts."""

from __future__ import annotations

import contextlib
import logging
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_config
from filters.types import Envelope
from gateway import actions
from gateway.milter.server import MilterGateway
from gateway.milter.settings import parse_endpoint
from gateway.quarantine import QuarantineStore
from gateway.service import ThreadedGateway
from gateway.settings import from_config, with_overrides
from gateway.version import version
from tests.milter_mta import ALL_ACTIONS, MtaClient, apply_edits, split_message
from tests.test_gateway_policy import POLICY
from tests.test_gateway_smtp import send
from tests.test_gateway_support import (
    FakeScanner,
    config_dir,
    fake_factory,
    message,
    running_gateway,
    sink,
)

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def running_milter(
    tmp: Path,
    *,
    gateway: str = "",
    milter: str = "",
    listen: str = "inet:127.0.0.1:0",
    factory: Any = fake_factory,
    extra: str = "",
) -> Iterator[ThreadedGateway]:
    # The banner is off by default (it changes signed content); these tests check that the
    # milter applies it the way the SMTP modes do, so they turn it on.
    # The fake engine puts the envelope it saw into its summary; a banner text that shows the
    # summary lets the tests read it back from the delivered message.
    banner = (
        "banner = true\n" if "banner =" not in gateway else ""
    ) + 'banner_texts.en = { brand = "{brand}: {summary}", generic = "{summary}" }\n'
    cfg = config_dir(tmp, banner + gateway + "\n[gateway.milter]\n" + milter, extra=extra)
    config = load_config(cfg)
    overrides = {"quarantine_dir": str(tmp / "quarantine"), "metrics": "", "workers": 1}
    settings = with_overrides(from_config(config), **overrides)
    gw = MilterGateway(
        config,
        settings,
        listen=parse_endpoint(listen, "test", "listen"),
        config_path=str(cfg),
        overrides=overrides,
        engine_factory=factory,
    )
    with ThreadedGateway(gw) as tg:
        yield tg


def session(port: int, **neg: int) -> MtaClient:
    mta = MtaClient(port)
    mta.negotiate(**neg)
    mta.macro("C", j="mx.example", daemon_name="smtpd")
    mta.connect("mx.client.example", "192.0.2.7")
    mta.helo("client.example")
    return mta


def as_smtp_modes_mark_it(gw: ThreadedGateway, raw: bytes, envelope: Envelope) -> bytes:
    """raw as the SMTP modes relay it (same settings, same engine, actions.mark)."""
    s, config = gw.gateway.settings, gw.gateway.config
    clean = actions.strip_our_headers(raw, spam=s.spam_headers, authserv_id=s.our_authserv_id)
    verdict = FakeScanner().scan(clean, envelope)
    d = actions.decision_for(s, verdict, envelope.rcpt_tos, config.thresholds, version())
    return actions.mark(clean, d.verdict, d.marking, d.action).data


SESSION_ENVELOPE = Envelope(
    "alice@sender.example", ("bob@rcpt.example",), "192.0.2.7", "client.example"
)


def result(raw: bytes, edits: list[Any], leadspc: bool = True) -> bytes:
    fields, body = split_message(raw, leadspc)
    return apply_edits(fields, body, edits, leadspc)


# --------------------------------------------------------------------------- negotiation


def test_negotiation_asks_only_for_what_it_needs_and_the_mta_offers(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw:
        with MtaClient(gw.port) as mta:
            neg = mta.negotiate()
        # headers, header changes, body, quarantine, macro lists
        assert (neg.version, neg.actions) == (6, 0x1 | 0x10 | 0x2 | 0x20 | 0x100)
        # no UNKNOWN/DATA events, SKIP, leading spaces kept, no replies before the body
        assert neg.protocol == (0x100 | 0x200 | 0x400 | 1 << 20) | (
            1 << 7 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 18
        )
        assert "{client_addr}" in neg.macros[0] and "{auth_authen}" in neg.macros[2]
        # an MTA offering less (protocol 2, no body changes, no macro lists) gets less
        with MtaClient(gw.port) as mta:
            neg = mta.negotiate(version=2, actions=0x1 | 0x10, protocol=0x7F)
        assert (neg.version, neg.actions, neg.protocol, neg.macros) == (2, 0x11, 0, {})


def test_an_mta_without_no_reply_steps_gets_a_reply_for_each_event(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, MtaClient(gw.port) as mta:
        mta.negotiate(actions=ALL_ACTIONS, protocol=0x3FF)  # protocol 4 steps only
        assert mta.connect() is not None and mta.helo() is not None
        reply, edits = mta.message(message())
        assert (reply.cmd, [e.cmd for e in edits]) == ("c", ["i"] * 4)


# --------------------------------------------------------------------------- actions


def test_passed_mail_gets_header_fields_only(tmp_path: Path) -> None:
    raw = message(body="Grüße\r\n.dot\r\n")
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        for _ in range(3):  # several messages on one connection
            reply, edits = mta.message(raw)
            assert (reply.cmd, [e.cmd for e in edits]) == ("c", ["i"] * 4)
            out = result(raw, edits)
            # inserted on top; every field that came and the body follow byte for byte
            assert out.endswith(raw)
            assert out.startswith(b"X-Brandgate-Status: pass score=0.00 required=4.00 rules=none")
            assert out == as_smtp_modes_mark_it(gw, raw, SESSION_ENVELOPE)


def test_pass_headers_off_means_no_edit_at_all(tmp_path: Path) -> None:
    with (
        running_milter(tmp_path, gateway="pass_headers = false") as gw,
        session(gw.port) as mta,
    ):
        for _ in range(3):
            reply, edits = mta.message(message(body="Grüße\r\n.dot\r\n"))
            assert (reply.cmd, edits) == ("c", [])
        # only passed mail: a tag is marked as ever
        _, edits = mta.message(message(verdict="tag"))
        assert "i" in [e.cmd for e in edits]


def test_forged_verdict_fields_are_removed_even_from_passed_mail(tmp_path: Path) -> None:
    raw = message(extra="X-Brandgate-Verdict: pass\r\nX-Spam-Flag: YES\r\n")
    delete = ("m", b"\0\0\0\x01X-Brandgate-Verdict\0\0")
    with (
        running_milter(tmp_path, gateway="pass_headers = false") as gw,
        session(gw.port) as mta,
    ):
        reply, edits = mta.message(raw)
    assert reply.cmd == "c"
    assert [(e.cmd, e.data) for e in edits] == [delete]
    spam = "spam_headers = true"
    with running_milter(tmp_path, gateway=spam) as gw, session(gw.port) as mta:
        reply, edits = mta.message(raw)
    out = result(raw, edits)
    assert out.count(b"X-Brandgate-Verdict: ") == 1 and b"X-Spam-Flag" not in out
    assert b"X-Spam-Status: No, score=0.0 required=4.0 tests=none" in out.replace(b"\r\n ", b" ")


def test_tag_gives_the_smtp_modes_headers_and_banner(tmp_path: Path) -> None:
    raw = message(subject="Testbrand", verdict="tag", extra="X-BRANDGATE-Score: -5\r\n")
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, edits = mta.message(raw)
        assert reply.cmd == "c"
        assert [e.cmd for e in edits] == ["m", "i", "i", "i", "i", "i", "b"]
        out = result(raw, edits)
        assert out == as_smtp_modes_mark_it(gw, raw, SESSION_ENVELOPE)
    assert out.startswith(b"X-Brandgate-Status: tag score=9.50 required=4.00 brand=Testbrand")
    assert b"X-Brandgate-Verdict: tag\r\n" in out and b"-5" not in out
    # the banner text of [gateway.banner_texts.en], which shows the engine's summary
    assert out.count(b"Testbrand: Claims to be Testbrand; client=192.0.2.7") == 1


def test_banner_off_means_headers_only(tmp_path: Path) -> None:
    with running_milter(tmp_path, gateway="banner = false") as gw, session(gw.port) as mta:
        _, edits = mta.message(message(verdict="tag"))
    assert [e.cmd for e in edits] == ["i"] * 5


def test_reject_is_550_with_the_reason(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, edits = mta.message(message(subject="Testbrand", verdict="reject"))
        assert (reply.cmd, reply.text) == (
            "y",
            "550 5.7.1 Message refused: brand impersonation (Testbrand)",
        )
        assert edits == []
        # the connection goes on with the next message
        assert mta.message(message())[0].cmd == "c"


def test_quarantine_hold_tags_and_asks_for_the_hold_queue(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, edits = mta.message(message(verdict="quarantine"))
    assert reply.cmd == "c"
    assert [e.cmd for e in edits][-1] == "q"
    assert edits[-1].text.startswith("brandgate: Claims to be Testbrand")
    assert b"X-Brandgate-Verdict: quarantine" in result(message(verdict="quarantine"), edits)
    assert QuarantineStore(tmp_path / "quarantine").open().entries() == []


def test_quarantine_store_keeps_the_original_and_discards(tmp_path: Path) -> None:
    raw = message(verdict="quarantine", extra="X-Brandgate-Verdict: pass\r\n")
    with (
        running_milter(tmp_path, milter='quarantine = "store"') as gw,
        session(gw.port) as mta,
    ):
        reply, edits = mta.message(raw, auth="alice", queue_id="4QID1")
    assert (reply.cmd, edits) == ("d", [])
    store = QuarantineStore(tmp_path / "quarantine").open()
    (entry,) = store.entries()
    assert store.raw(entry.id) == raw
    assert (entry.mail_from, entry.rcpts, entry.verdict) == (
        "alice@sender.example",
        ("bob@rcpt.example",),
        "quarantine",
    )
    assert entry.client["addr"] == "192.0.2.7" and entry.client["helo"] == "client.example"
    assert entry.client["xforward"] == {
        "ADDR": "192.0.2.7",
        "NAME": "mx.client.example",
        "HELO": "client.example",
        "IDENT": "4QID1",
    }


def test_quarantine_both_stores_and_holds(tmp_path: Path) -> None:
    with (
        running_milter(tmp_path, milter='quarantine = "both"') as gw,
        session(gw.port) as mta,
    ):
        reply, edits = mta.message(message(verdict="quarantine"))
    assert reply.cmd == "c" and edits[-1].cmd == "q"
    assert len(QuarantineStore(tmp_path / "quarantine").open().entries()) == 1


def test_hold_falls_back_to_the_store_when_the_mta_has_no_quarantine(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, MtaClient(gw.port) as mta:
        mta.negotiate(actions=ALL_ACTIONS & ~0x20)
        reply, _ = mta.message(message(verdict="quarantine"))
    assert reply.cmd == "d"
    assert len(QuarantineStore(tmp_path / "quarantine").open().entries()) == 1


def test_quarantine_store_failure_is_451(tmp_path: Path) -> None:
    with (
        running_milter(tmp_path, milter='quarantine = "store"') as gw,
        session(gw.port) as mta,
    ):
        msgdir = tmp_path / "quarantine" / "messages"
        msgdir.rename(tmp_path / "moved")
        msgdir.write_text("not a directory")  # a full or broken disk, even for root
        reply, _ = mta.message(message(verdict="quarantine"))
    assert (reply.cmd, reply.text) == ("y", "451 4.3.0 Quarantine unavailable, try again later")


def test_scan_failure_is_451_and_fail_open_passes_with_a_status(tmp_path: Path) -> None:
    raw = message(extra="X-Test-Raise: 1\r\n")
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, _ = mta.message(raw)
        assert (reply.cmd, reply.text) == (
            "y",
            "451 4.3.0 Temporary scanning failure, try again later",
        )
    with running_milter(tmp_path, gateway="fail_open = true") as gw, session(gw.port) as mta:
        reply, edits = mta.message(raw)
    assert reply.cmd == "c"
    assert b"X-Brandgate-Status: error\r\n" in result(raw, edits)


def test_the_engine_sees_the_envelope_and_connection(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, "brandgate.message")
    with running_milter(tmp_path) as gw, MtaClient(gw.port) as mta:
        mta.negotiate()
        mta.connect("[2001:db8::5]", "2001:db8::5")
        mta.helo("helo.example")
        _, edits = mta.message(message(verdict="tag"), auth="alice", queue_id="4XYZ")
    out = result(message(verdict="tag"), edits).replace(b"\r\n", b" ")
    assert b"client=2001:db8::5; helo=helo.example" in out  # the fake engine's summary
    line = next(r.getMessage() for r in caplog.records if r.name == "brandgate.message")
    for part in ("queue_id=4XYZ", "client=2001:db8::5", "auth=alice", "verdict=tag", "banner=yes"):
        assert part in line, line


def test_one_message_one_marking_through_the_milter_and_the_smtp_gateway(tmp_path: Path) -> None:
    """The same configuration and message through both doors: the same bytes come out."""
    gateway = "banner = true\nspam_headers = true\n"  # running_milter adds the texts
    texts = 'banner_texts.en = { brand = "{brand}: {summary}", generic = "{summary}" }\n'
    raws = [message(), message(subject="Testbrand", verdict="tag", extra="X-Spam-Flag: NO\r\n")]
    with running_milter(tmp_path / "m", gateway=gateway) as gw, session(gw.port) as mta:
        via_milter = [result(raw, mta.message(raw)[1]) for raw in raws]
    xforward = "ADDR=192.0.2.7 HELO=client.example"
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path / "s", hop_port, gateway=gateway + texts) as smtp,
    ):
        for raw in raws:
            assert send(smtp.port, raw, xforward=xforward)[0] == 250
    assert [m.data for m in hop.messages] == via_milter
    assert via_milter[0].startswith(b"X-Brandgate-Status: pass")
    assert b"data-brandgate" not in via_milter[0] and via_milter[0].endswith(raws[0])
    assert b"X-Spam-Flag: YES\r\n" in via_milter[1] and b"Claims to be Testbrand" in via_milter[1]


def test_pass_headers_off_is_the_same_rule_through_the_smtp_gateway(tmp_path: Path) -> None:
    raw = message(extra="X-Brandgate-Verdict: pass\r\n")
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway="pass_headers = false") as smtp,
    ):
        assert send(smtp.port, raw)[0] == 250
        assert send(smtp.port, message(verdict="tag"))[0] == 250
    passed, tagged = (m.data for m in hop.messages)
    assert passed == actions.strip_our_headers(raw) == message()  # as it came, bar the forgery
    assert tagged.startswith(b"X-Brandgate-Status: tag ")


def test_recipients_of_several_policies_get_the_strictest(tmp_path: Path, caplog: Any) -> None:
    """A milter cannot split the transaction (one answer, one body for all recipients): the
    strictest action among the recipients' policies applies, under that policy."""
    caplog.set_level(logging.INFO, "brandgate.message")
    utf8 = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    raw = message(verdict="tag", subject="Testbrand", extra=utf8)  # the fake scores 9.5
    gateway = "banner = false\n" + POLICY
    with running_milter(tmp_path, gateway=gateway) as gw, session(gw.port) as mta:
        # alone, the relaxed recipient's thresholds make it a pass (headers only)
        reply, edits = mta.message(raw, rcpts=("dave@relaxed.example",))
        relaxed = result(raw, edits)
        # with a recipient whose policy tags (German banner), the tag applies to both
        reply, edits = mta.message(raw, rcpts=("dave@relaxed.example", "carol@rcpt.example"))
        both = result(raw, edits)
        # the boss's policy quarantines: into Postfix's hold queue for all of them
        reply, edits = mta.message(raw, rcpts=("carol@rcpt.example", "boss@rcpt.example"))
        held = [e.cmd for e in edits]
    assert relaxed.startswith(b"X-Brandgate-Status: pass score=9.50 required=10.00")
    assert relaxed.endswith(raw)
    assert both.startswith(b"X-Brandgate-Status: tag score=9.50 required=4.00")
    assert b"gibt sich als Testbrand aus" in both.replace(b"\r\n", b" ")
    assert (reply.cmd, held[-1]) == ("c", "q")
    lines = [r.getMessage() for r in caplog.records if r.name == "brandgate.message"]
    assert "policy=relaxed.example" in lines[0] and "action=pass" in lines[0]
    assert "policy=rcpt.example" in lines[1] and "action=tag" in lines[1]
    assert "policy=boss@rcpt.example" in lines[2] and "action=quarantine" in lines[2]


# --------------------------------------------------------------------------- limits


def test_oversize_is_refused_at_the_chunk_that_crosses_the_limit(tmp_path: Path) -> None:
    big = message(body="x" * 100 + "\r\n" + "y" * 70_000 + "\r\n")
    with (
        running_milter(tmp_path, gateway="data_size_limit = 1000") as gw,
        session(gw.port) as mta,
    ):
        reply, _ = mta.message(big)
        assert (reply.cmd, reply.text) == ("y", "552 5.3.4 Message size exceeds fixed limit")
        mta.abort()
        assert mta.message(message())[0].cmd == "c"


def test_oversize_tempfail_or_accept_unscanned(tmp_path: Path) -> None:
    big = message(body="y" * 70_000 + "\r\n" + "z" * 70_000 + "\r\n")
    milter = 'oversize = "tempfail"'
    with (
        running_milter(tmp_path, gateway="data_size_limit = 1000", milter=milter) as gw,
        session(gw.port) as mta,
    ):
        reply, _ = mta.message(big)
        assert reply.text.startswith("452 4.3.4")
    milter = 'oversize = "accept"'
    with (
        running_milter(tmp_path, gateway="data_size_limit = 1000", milter=milter) as gw,
        session(gw.port) as mta,
    ):
        mta.macro("M", i="Q1")
        mta.mail("a@b.example")
        mta.rcpt("c@d.example")
        mta.header(b"Subject", b" big")
        mta.eoh()
        assert mta.body(b"y" * 65535).cmd == "s"  # the rest is not wanted
        reply, edits = mta.eom()
    assert reply.cmd == "c"
    assert [e.cmd for e in edits] == ["i", "i"]
    assert b"not scanned: larger than 1000 bytes" in edits[0].data


def test_peer_outside_allowed_networks_is_closed_on(tmp_path: Path) -> None:
    gateway = 'allowed_networks = ["192.0.2.0/24"]'
    with running_milter(tmp_path, gateway=gateway) as gw, MtaClient(gw.port) as mta:
        assert mta.closed()


def test_connections_beyond_max_sessions_are_closed(tmp_path: Path) -> None:
    with (
        running_milter(tmp_path, gateway="max_sessions = 1") as gw,
        session(gw.port),
        MtaClient(gw.port) as second,
    ):
        assert second.closed()


def test_idle_connection_times_out(tmp_path: Path) -> None:
    with running_milter(tmp_path, milter="idle_timeout = 0.3") as gw, MtaClient(gw.port) as mta:
        mta.negotiate()
        t0 = time.monotonic()
        assert mta.closed(5)
        assert time.monotonic() - t0 < 4


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x00\x00\x00",  # zero length
        b"\xff\xff\xff\xffO",  # 4 GiB announced
        b"\x00\x00\x00\x03Hx\x00",  # HELO before negotiation
        struct.pack("!I", 13)
        + b"O"
        + struct.pack("!III", 6, 0x1FF, 0x1FFFFF)
        + b"\x00\x00\x00\x01Z",
    ],
)
def test_protocol_errors_close_the_connection(tmp_path: Path, junk: bytes) -> None:
    with running_milter(tmp_path) as gw:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(junk)
            got = b""
            while chunk := s.recv(4096):
                got += chunk
        # nothing, or just the negotiation reply before the unknown command
        assert got == b"" or (got[4:5] == b"O" and len(got) == 4 + struct.unpack("!I", got[:4])[0])
        # the server is fine afterwards
        with session(gw.port) as mta:
            assert mta.message(message())[0].cmd == "c"


def test_abort_and_quit_nc_reset_the_state(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        mta.mail("a@b.example")
        mta.header(b"X-Test-Verdict", b" reject")
        mta.abort()  # the half message is gone: the next one passes
        assert mta.message(message())[0].cmd == "c"
        mta.send("K")  # quit, new SMTP session on this connection
        mta.connect("other.example", "198.51.100.1")
        _, edits = mta.message(message(verdict="tag"))
        out = result(message(verdict="tag"), edits).replace(b"\r\n", b" ")
        assert b"client=198.51.100.1; helo=None" in out


def test_unix_socket_with_mode_and_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a crashed milter leaves it
    with running_milter(tmp_path, listen=f"unix:{path}", milter='socket_mode = "0600"'):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with MtaClient(path=str(path)) as mta:
            mta.negotiate()
            mta.connect("localhost", "127.0.0.1")
            assert mta.message(message())[0].cmd == "c"
        # a second milter on the same live socket refuses to start
        with (
            pytest.raises(Exception, match="another milter"),
            running_milter(tmp_path / "b", listen=f"unix:{path}"),
        ):
            pass
    assert not path.exists()


def test_stop_closes_idle_connections_and_reload_keeps_the_socket(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw:
        mta = session(gw.port)
        port = gw.port
        assert gw.call(gw.gateway.reload())
        assert gw.port == port
        assert mta.message(message())[0].cmd == "c"
        gw.call(gw.gateway.stop())
        assert mta.closed()
        mta.close()


# --------------------------------------------------------------------------- config and CLI


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("inet:127.0.0.1:10030", "inet:127.0.0.1:10030"),
        ("inet:10030@127.0.0.1", "inet:127.0.0.1:10030"),
        ("inet6:10030@::1", "inet:[::1]:10030"),
        ("[::1]:10030", "inet:[::1]:10030"),
        ("unix:/run/brandgate/milter.sock", "unix:/run/brandgate/milter.sock"),
        ("local:/run/m.sock", "unix:/run/m.sock"),
        ("/run/m.sock", "unix:/run/m.sock"),
    ],
)
def test_listen_spellings(spec: str, want: str) -> None:
    assert str(parse_endpoint(spec, "f", "k")) == want


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('listen = "unix:relative.sock"', "gateway.milter.listen"),
        ('listen = "inet:host"', "gateway.milter.listen"),
        ('quarantine = "spam-folder"', "gateway.milter.quarantine"),
        ('oversize = "truncate"', "gateway.milter.oversize"),
        ('socket_mode = "rw"', "gateway.milter.socket_mode"),
        ("idle_timeout = 0", "gateway.milter.idle_timeout"),
        ("timeout = 5", "gateway.milter.timeout"),
    ],
)
def test_bad_milter_settings_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    from config.loader import ConfigError

    cfg = config_dir(tmp_path, "\n[gateway.milter]\n" + table)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_config(load_config(cfg))


def test_milter_command_line(tmp_path: Path) -> None:
    from gateway.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["milter", "--help"])
    assert exc.value.code == 0
    cfg = config_dir(tmp_path, '\n[gateway.milter]\nquarantine = "nowhere"')
    assert main(["milter", "--config", str(cfg)]) == 2
    assert main(["milter", "--config", str(cfg), "--listen", "inet:nohost"]) == 2
