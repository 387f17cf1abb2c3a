"""Per-recipient and per-recipient-domain policy in the gateway (issue 10): thresholds, actions
and the banner per recipient, and one policy per SMTP transaction (452 4.5.3 for the others,
which the client sends again in a transaction of their own)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from gateway.quarantine import QuarantineStore
from gateway.settings import from_table
from tests.test_gateway_support import message, running_gateway, sink

pytestmark = pytest.mark.timeout(60)

POLICY = """
[gateway.recipients."relaxed.example"]
thresholds = { tag = 10.0, quarantine = 20.0, reject = 30.0 }

[gateway.recipients."boss@rcpt.example"]
actions = { tag = "quarantine" }

[gateway.recipients."rcpt.example"]
banner = true
banner_language = "de"
"""


def test_policy_lookup_address_then_domain_then_parent_then_defaults() -> None:
    table = {
        "recipients": {
            "example.org": {"banner": True},
            "sales.example.org": {"banner_language": "fr"},
            "ceo@sales.example.org": {"actions": {"tag": "quarantine"}},
        },
        "banner_texts": {
            "en": {"brand": "b", "generic": "g"},
            "fr": {"brand": "b", "generic": "g"},
        },
    }
    s = from_table(table, "test")
    assert s.policy_for("CEO@Sales.Example.org").key == "ceo@sales.example.org"
    assert s.policy_for("ceo@sales.example.org").actions["tag"] == "quarantine"
    assert s.policy_for("bob@sales.example.org").banner_language == "fr"
    assert s.policy_for("bob@eu.example.org").key == "example.org"
    assert s.policy_for("bob@eu.example.org").banner is True
    other = s.policy_for("x@elsewhere.example")
    assert other.key == "" and other.banner is False and other.thresholds is None


def test_policy_errors_name_the_recipient_and_key() -> None:
    from config.loader import ConfigError

    bad = {
        "recipients": {
            "@nodomain": {},
            "ok.example": {"thresholds": {"tag": 9, "quarantine": 1, "reject": 2}},
            "x.example": {"bannr": True},
        }
    }
    with pytest.raises(ConfigError) as err:
        from_table(bad, "f.toml")
    text = "\n".join(str(e) for e in err.value.errors)
    assert 'f.toml: gateway.recipients."@nodomain": expected a recipient address' in text
    assert 'ok.example".thresholds: must rise' in text
    assert 'x.example".bannr: unknown key; did you mean "banner"?' in text


def _send(port: int, rcpts: list[str], data: bytes) -> tuple[dict[str, tuple[int, bytes]], int]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.test.invalid")
        c.mail("alice@sender.example")
        answers = {r: c.rcpt(r) for r in rcpts}
        code = c.data(data)[0] if any(a[0] == 250 for a in answers.values()) else 0
    return answers, code


def test_recipients_of_another_policy_get_452_and_each_policy_applies(tmp_path: Path) -> None:
    utf8 = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    data = message(verdict="tag", subject="Testbrand", extra=utf8)  # the fake scores 9.5
    with (
        sink() as (hop, hop_port),
        running_gateway(tmp_path, hop_port, gateway=POLICY) as gw,
    ):
        answers, code = _send(gw.port, ["carol@rcpt.example", "dave@relaxed.example"], data)
        assert answers["carol@rcpt.example"][0] == 250
        assert answers["dave@relaxed.example"][0] == 452
        assert b"4.5.3" in answers["dave@relaxed.example"][1]
        assert code == 250
        # the client sends the deferred one again, alone: its own thresholds make it a pass
        answers, code = _send(gw.port, ["dave@relaxed.example"], data)
        assert code == 250
        # the boss's policy quarantines what others get tagged
        answers, code = _send(gw.port, ["boss@rcpt.example"], data)
        assert code == 250
    tagged, relaxed = hop.messages
    assert tagged.rcpts == ["carol@rcpt.example"]
    assert b"X-Brandgate-Verdict: tag" in tagged.data
    assert b"gibt sich als Testbrand aus" in tagged.data.replace(b"\r\n", b" ")  # German banner
    assert relaxed.rcpts == ["dave@relaxed.example"]
    assert b"X-Brandgate-Status: pass score=9.50 required=10.00" in relaxed.data
    assert b"data-brandgate-banner" not in relaxed.data and b"Vorsicht" not in relaxed.data
    held = QuarantineStore(tmp_path / "quarantine").open().entries()
    assert [e.rcpts for e in held] == [("boss@rcpt.example",)]
