"""Shared pieces of the gateway tests: a real SMTP sink, a config directory, a fake engine.

The sink is a real aiosmtpd server on a free loopback port; clients are smtplib or raw sockets.
The fake engine (our own module's stand-in, chosen per message by an X-Test-* header) lets the
fault and action tests pick a verdict, an exception or a delay without depending on scoring.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from config.loader import Config, load_config
from filters.types import BrandClaim, Envelope, ScoredFinding, Verdict
from gateway.service import ThreadedGateway
from gateway.settings import from_config, with_overrides
from gateway.smtp.server import Gateway

# --------------------------------------------------------------------------- sink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    options: list[str]
    data: bytes
    xforward: dict[str, str]


@dataclass
class SinkHandler:
    reply: str = "250 2.0.0 Ok: queued as SINK42"
    delay: float = 0.0
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-XFORWARD NAME ADDR PROTO HELO IDENT SOURCE", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        if self.reply.startswith("250"):
            with self.lock:
                self.messages.append(
                    Received(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        list(envelope.mail_options),
                        envelope.original_content,
                        dict(getattr(server, "xforward", {})),
                    )
                )
        return self.reply


class _SinkSMTP(SMTP):
    xforward: dict[str, str]

    async def smtp_XFORWARD(self, arg: str) -> None:
        self.xforward = getattr(self, "xforward", {})
        for item in (arg or "").split():
            k, _, v = item.partition("=")
            self.xforward[k.upper()] = v
        await self.push("250 2.0.0 Ok")


class _SinkController(Controller):
    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, enable_SMTPUTF8=True, hostname="sink.test.invalid")


@contextlib.contextmanager
def sink(**kwargs: Any) -> Iterator[tuple[SinkHandler, int]]:
    handler = SinkHandler(**kwargs)
    port = free_port()
    ctl = _SinkController(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


# --------------------------------------------------------------------------- config

BRANDS = """
[brands.testbrand]
name = "Testbrand"
source = "gateway test fixture"
sender_domains = ["testbrand.example"]
"""


def config_dir(root: Path, gateway: str = "", engine: str = "", extra: str = "") -> Path:
    cfg = root / "conf"
    (cfg / "brands").mkdir(parents=True, exist_ok=True)
    (cfg / "brands" / "testbrand.toml").write_text(BRANDS)
    text = ""
    if engine:
        text += "[engine]\n" + engine + "\n"
    text += extra + "\n[gateway]\n" + gateway + "\n"
    (cfg / "brandgate.toml").write_text(text)
    return cfg


# --------------------------------------------------------------------------- fake engine


def _decoded(value: str | None) -> str:
    if value is None:
        return ""
    return str(email.header.make_header(email.header.decode_header(value)))


class FakeScanner:
    """X-Test-Verdict picks the verdict; X-Test-Raise and X-Test-Sleep make faults.

    The brand name is the decoded Subject, so header-injection tests can put CR/LF and
    forged header lines into a value that the gateway writes into X-Brandgate-Brand.
    """

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        msg = email.message_from_bytes(raw)
        if msg.get("X-Test-Sleep"):
            time.sleep(float(msg["X-Test-Sleep"]))
        if msg.get("X-Test-Raise"):
            raise RuntimeError("injected scan failure")
        if msg.get("X-Test-Status") == "error":
            return Verdict("pass", 0.0, None, (), "Not scanned", status="error", error="boom")
        verdict = (msg.get("X-Test-Verdict") or "pass").strip()
        if verdict == "pass":
            return Verdict("pass", 0.0, None, (), "Nothing found.")
        env = envelope or Envelope()
        name = _decoded(msg.get("Subject")) or "Testbrand"
        return Verdict(
            verdict=verdict,
            score=9.5,
            brand=BrandClaim("testbrand", name, ("subject",), ("testbrand",), 1.0),
            findings=(
                ScoredFinding("BRAND_SENDER_UNVERIFIED", "claim", 6.0, ("x",), "d"),
                ScoredFinding("LINK_DIVERSION", "links", 3.5, ("evil.example",), "d"),
            ),
            summary=f"Claims to be Testbrand; client={env.client_ip}; helo={env.helo}.",
        )


def fake_factory(config: Config) -> FakeScanner:
    return FakeScanner()


def raising_factory(config: Config) -> FakeScanner:
    raise RuntimeError("engine cannot be built")


# --------------------------------------------------------------------------- gateway


@contextlib.contextmanager
def running_gateway(
    tmp: Path,
    next_port: int,
    *,
    gateway: str = "",
    engine: str = "",
    mode: str = "after-queue",
    factory: Any = fake_factory,
    metrics: str = "",
    extra: str = "",
    workers: int = 1,
) -> Iterator[ThreadedGateway]:
    cfg = config_dir(tmp, gateway, engine, extra)
    config = load_config(cfg)
    overrides = {
        "listen": "127.0.0.1:0",
        "next_hop": f"127.0.0.1:{next_port}",
        "mode": mode,
        "quarantine_dir": str(tmp / "quarantine"),
        "metrics": metrics,
        "workers": workers,
    }
    settings = with_overrides(from_config(config), **overrides)
    gw = Gateway(
        config, settings, config_path=str(cfg), overrides=overrides, engine_factory=factory
    )
    with ThreadedGateway(gw) as tg:
        yield tg


def message(
    subject: str = "Hello",
    *,
    verdict: str | None = None,
    extra: str = "",
    body: str = "Just a normal note.\r\nSecond line.\r\n",
) -> bytes:
    head = (
        "From: Alice <alice@sender.example>\r\n"
        "To: bob@rcpt.example\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <t1@sender.example>\r\n"
    )
    if verdict:
        head += f"X-Test-Verdict: {verdict}\r\n"
    head += extra
    return (head + "\r\n" + body).encode("utf-8")


def test_fake_scanner_picks_verdicts() -> None:
    # the helper itself: tests below rely on it choosing what they ask for
    scanner = FakeScanner()
    assert scanner.scan(message()).verdict == "pass"
    assert scanner.scan(message(verdict="tag")).verdict == "tag"
    assert scanner.scan(message(extra="X-Test-Status: error\r\n")).status == "error"
