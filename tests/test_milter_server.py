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
from gateway import actions
from gateway.milter import MilterGateway
from gateway.milter_settings import parse_endpoint
from gateway.quarantine import QuarantineStore
from gateway.server import ThreadedGateway
from gateway.settings import from_config, with_overrides
from tests.milter_mta import ALL_ACTIONS, MtaClient, apply_edits, split_message
from tests.test_gateway_support import FakeScanner, config_dir, fake_factory, message

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def running_milter(
    tmp: Path,
    *,
    gateway: str = "",
    milter: str = "",
    listen: str = "inet:127.0.0.1:0",
    factory: Any = fake_factory,
) -> Iterator[ThreadedGateway]:
    # The banner is off by default (it changes signed content); these tests check that the
    # milter applies it the way the SMTP modes do, so they turn it on.
    # The fake engine puts the envelope it saw into its summary; a banner text that shows the
    # summary lets the tests read it back from the delivered message.
    banner = (
        "banner = true\n" if "banner =" not in gateway else ""
    ) + 'banner_texts.en = { brand = "{brand}: {summary}", generic = "{summary}" }\n'
    cfg = config_dir(tmp, banner + gateway + "\n[gateway.milter]\n" + milter)
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


def tagged_expectation(raw: bytes, **kw: Any) -> bytes:
    clean = actions.strip_our_headers(raw)
    verdict = FakeScanner().scan(clean, None)
    return actions.tagged(clean, verdict, banner=True, subject_prefix="", **kw)[0]


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
        assert (reply.cmd, edits) == ("c", [])


# --------------------------------------------------------------------------- actions


def test_passed_mail_gets_no_edit_at_all(tmp_path: Path) -> None:
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        for _ in range(3):  # several messages on one connection
            reply, edits = mta.message(message(body="Grüße\r\n.dot\r\n"))
            assert (reply.cmd, edits) == ("c", [])


def test_forged_verdict_fields_are_removed_even_from_passed_mail(tmp_path: Path) -> None:
    raw = message(extra="X-Brandgate-Verdict: pass\r\n")
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, edits = mta.message(raw)
    assert reply.cmd == "c"
    assert [(e.cmd, e.data) for e in edits] == [("m", b"\0\0\0\x01X-Brandgate-Verdict\0\0")]


def test_tag_gives_the_smtp_modes_headers_and_banner(tmp_path: Path) -> None:
    raw = message(subject="Testbrand", verdict="tag", extra="X-BRANDGATE-Score: -5\r\n")
    with running_milter(tmp_path) as gw, session(gw.port) as mta:
        reply, edits = mta.message(raw)
    assert reply.cmd == "c"
    assert [e.cmd for e in edits] == ["m", "i", "i", "i", "i", "b"]
    out = result(raw, edits)
    assert out == tagged_expectation(raw).replace(
        b"client=None; helo=None", b"client=192.0.2.7; helo=client.example"
    )
    assert b"X-Brandgate-Verdict: tag\r\n" in out and b"-5" not in out
    assert out.count(b"Testbrand: Claims to be Testbrand") == 1


def test_banner_off_means_headers_only(tmp_path: Path) -> None:
    with running_milter(tmp_path, gateway="banner = false") as gw, session(gw.port) as mta:
        _, edits = mta.message(message(verdict="tag"))
    assert [e.cmd for e in edits] == ["i"] * 4


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
    out = result(message(verdict="tag"), edits)
    assert b"client=2001:db8::5; helo=helo.example" in out  # the fake engine's summary
    line = next(r.getMessage() for r in caplog.records if r.name == "brandgate.message")
    for part in ("queue_id=4XYZ", "client=2001:db8::5", "auth=alice", "verdict=tag", "banner=yes"):
        assert part in line, line


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
        assert b"client=198.51.100.1; helo=None" in result(message(verdict="tag"), edits)


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
    from gateway.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["milter", "--help"])
    assert exc.value.code == 0
    cfg = config_dir(tmp_path, '\n[gateway.milter]\nquarantine = "nowhere"')
    assert main(["milter", "--config", str(cfg)]) == 2
    assert main(["milter", "--config", str(cfg), "--listen", "inet:nohost"]) == 2
