"""Issue 11's "Must show" figures that the per-defect tests leave implicit.

* 100 consecutive relay failures, each in a client session of its own (the issue counted 94
  connections left open after 105 failures): the next hop sees no connection left open
  beyond the one the relay pool keeps for reuse, and none once the gateway has stopped.
* The envelope cases (8-bit without SMTPUTF8, invalid UTF-8, control characters) are
  relayed byte for byte in before-queue mode too, where brandgate's reply is the client's.
* Relaying a large clean message of many short lines stays cheap for the gateway process
  (the relay stuffs dots piece by piece, without a regex per line).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.smtp import relay
from tests.rawsink import raw_sink
from tests.test_gateway_support import message, running_gateway
from tests.test_relay_hostile import BYTE_FOR_BYTE, Client, session

pytestmark = pytest.mark.timeout(180)

# (envelope sender, what the client must hear): each makes the relay fail differently
FAILURES = [
    (b"mail-451@sender.example", b"451 "),  # the next hop refuses MAIL, temporarily
    (b"rcpt-550@sender.example", b"550 5.1.1"),  # ... every recipient, permanently
    (b"data-554@sender.example", b"554 5.7.1"),  # ... the data
    (b"drop@sender.example", b"451 4.4.2"),  # ... hangs up at MAIL
    (b"bug@sender.example", b"451 4.3.0 Temporary failure"),  # our relay code raises
    (b"caf\xe9-bug@sender.example", b"451 4.3.0 Temporary failure"),  # ... on 8-bit input
]


def kept_by_pool(gw: object) -> int:
    """Connections the relay pool holds for the next message (read once the gateway is idle)."""
    pool = gw.gateway.relays  # type: ignore[attr-defined]
    return sum(1 for idle in pool._idle.values() for kept in idle if kept.client.is_connected)


def test_hundred_failures_in_separate_sessions_leave_no_connection_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = relay._transaction

    async def buggy(client: relay.SmtpClient, req: relay.RelayRequest, state: object) -> object:
        if "bug@" in req.mail_from:
            raise ValueError("secret internal detail")
        return await real(client, req, state)  # type: ignore[arg-type]

    monkeypatch.setattr(relay, "_transaction", buggy)
    replies = []
    with raw_sink() as hop:
        with running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
            for i in range(100):
                sender, _want = FAILURES[i % len(FAILURES)]
                c = session(gw.port)
                replies.append(c.transaction(sender, [b"b@rcpt.example"], message()))
                c.cmd(b"QUIT")
                c.close()
            time.sleep(0.5)  # the pool's QUITs and the hop's closes, done in the background
            open_after, kept = hop.open, kept_by_pool(gw)
            c = session(gw.port)
            ok = c.transaction(b"a@sender.example", [b"b@rcpt.example"], message())
            c.close()
        time.sleep(0.5)
        open_after_stop, opened = hop.open, hop.opened
    print(
        f"100 relay failures in 100 sessions: {opened} connections opened to the next hop, "
        f"{open_after} open after the failures ({kept} kept by the pool), "
        f"{open_after_stop} after the gateway stopped"
    )
    for i, reply in enumerate(replies):
        assert reply.startswith(FAILURES[i % len(FAILURES)][1]), (i, reply)
        assert b"secret" not in reply and b"Error" not in reply
        assert not reply.startswith(b"5") or FAILURES[i % len(FAILURES)][1].startswith(b"5")
    assert ok.startswith(b"250"), ok
    assert open_after - kept == 0, (open_after, kept, opened)
    assert kept <= 1  # one session at a time: never more than one idle connection
    assert open_after_stop == 0, open_after_stop


ENVELOPES = [
    pytest.param(b"j\xc3\xb6rg@sender.example", id="utf-8 without SMTPUTF8"),
    pytest.param(b"a\xff\xfe@sender.example", id="invalid utf-8"),
    pytest.param(b"a\x01b@sender.example", id="control character"),
    pytest.param(b"a\x1b[31m@sender.example", id="terminal escape"),
]


@pytest.mark.parametrize("sender", ENVELOPES)
def test_envelope_cases_before_the_queue_are_relayed_as_they_came(
    tmp_path: Path, sender: bytes
) -> None:
    rcpt = b"r\xc3\xa9cipient@rcpt.example"
    with (
        raw_sink() as hop,
        running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE, mode="before-queue") as gw,
    ):
        c = Client(gw.port)
        assert c.cmd(b"EHLO client.test.invalid").startswith(b"250")
        reply = c.transaction(sender, [rcpt], message())
        c.close()
    assert reply.startswith(b"250 "), reply
    (wire,) = hop.messages
    assert wire.mail.startswith(b"MAIL FROM:<" + sender + b">")
    assert wire.rcpts == [b"RCPT TO:<" + rcpt + b">"]
    assert wire.data == message()


def _hwm_mib(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_relaying_a_message_of_many_short_lines_costs_the_gateway_little_memory(
    tmp_path: Path,
) -> None:
    """A clean 20 MB message of 5 million short lines, relayed by `brandgate serve` (a real
    process, real engine): the gateway process (not its scan workers) may hold a few copies
    of the message, not 30. Also measured: the longest a greeting waited meanwhile."""
    import socket
    import threading

    from tests.test_gateway_process import serve_process

    raw = message("minutes", body="ab\r\n" * 5_000_000)
    with raw_sink() as hop, serve_process(tmp_path, hop.port, mode="after-queue", workers=1) as s:
        port, proc = s
        before = _hwm_mib(proc.pid)
        reply: list[bytes] = []

        def send() -> None:
            c = session(port)
            reply.append(c.transaction(b"a@sender.example", [b"b@rcpt.example"], raw))
            c.close()

        sender = threading.Thread(target=send)
        sender.start()
        waits = []
        while sender.is_alive():
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.recv(1024)
                waits.append(time.monotonic() - t0)
                s.sendall(b"QUIT\r\n")
            time.sleep(0.02)
        sender.join()
        grown = _hwm_mib(proc.pid) - before
    print(
        f"relaying {len(raw) / 2**20:.1f} MiB of 5M lines: the gateway process grew by "
        f"{grown:.0f} MiB ({grown * 2**20 / len(raw):.1f} bytes per message byte); longest "
        f"greeting wait {max(waits) * 1000:.0f} ms over {len(waits)} probes"
    )
    assert reply and reply[0].startswith(b"250"), reply
    # passed mail: our header fields prepended, every byte the client sent kept
    assert len(hop.messages) == 1 and hop.messages[0].data.endswith(raw)
    assert b"X-Brandgate-Status: pass" in hop.messages[0].data[:4096]
    assert max(waits) < 1.0, f"a greeting waited {max(waits):.2f} s"
    assert grown * 2**20 < 8 * len(raw), f"{grown:.0f} MiB for a {len(raw)} byte message"
