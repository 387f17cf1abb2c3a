"""One message cannot freeze the gateway (issue 11, defect 3): while a 10 MB hostile message is
received and scanned in before-queue mode, every other client gets its 220 within a second.

The hostile message is the one that froze every session for 30 s before: an X-Brandgate-*
header (so the gateway strips its own headers) over a header of 1.4 million continuation
lines, which used to be unfolded in quadratic time on the event loop. `brandgate serve` runs
as a real process with the real engine, as Postfix would use it (smtpd_proxy_filter).
"""

from __future__ import annotations

import random
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.hostile import continuation_lines
from tests.rawsink import raw_sink
from tests.test_gateway_process import serve_process

pytestmark = pytest.mark.timeout(180)
GREETING_BOUND = 1.0


def greeting_seconds(port: int) -> float:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.recv(1024)
        took = time.monotonic() - t0
        s.sendall(b"QUIT\r\n")
    return took


def test_other_sessions_get_220_within_a_second_during_a_10mb_hostile_message(
    tmp_path: Path,
) -> None:
    raw = continuation_lines(1_400_000, random.Random(0))
    assert len(raw) > 9_500_000
    with raw_sink() as hop, serve_process(tmp_path, hop.port, mode="before-queue", workers=2) as s:
        port = s[0]
        reply: list[tuple[int, bytes]] = []

        def hostile() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as c:
                c.ehlo("attacker.test.invalid")
                c.mail("a@sender.example")
                c.rcpt("b@rcpt.example")
                reply.append(c.data(raw))

        sender = threading.Thread(target=hostile)
        sender.start()
        probes = []
        while sender.is_alive():
            probes.append(greeting_seconds(port))
            time.sleep(0.05)
        sender.join()
    assert reply and reply[0][0] == 550, reply  # the phish behind the padding is refused
    assert len(probes) >= 5, probes
    assert max(probes) < GREETING_BOUND, sorted(probes)[-5:]
    print(f"greeting latency over {len(probes)} probes: max {max(probes) * 1000:.0f} ms")
