"""Relay connections kept open between messages: reused safely, never at a message's expense.

Real aiosmtpd sink on loopback, real aiosmtplib client inside RelayPool.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.smtp.relay import RelayPool, RelayRequest
from tests.test_gateway_support import SinkHandler, _SinkController, free_port


class CountingSink(SinkHandler):
    """Counts EHLOs: one per connection the pool opens."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.connections += 1
        return await super().handle_EHLO(server, session, envelope, hostname, responses)


def request(n: int, xforward: dict[str, str] | None = None) -> RelayRequest:
    data = f"From: a@example.org\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()
    return RelayRequest(
        "a@example.org", ("b@example.net", "c@example.net"), data, xforward=xforward
    )


async def relay_all(pool: RelayPool, port: int, reqs: list[RelayRequest]) -> list[int]:
    codes = []
    for req in reqs:
        res = await pool.relay(req, "127.0.0.1", port, timeout=10, local_hostname="gw.test")
        codes.append(res.code)
    return codes


def start(handler: SinkHandler, port: int) -> _SinkController:
    ctl = _SinkController(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    return ctl


def test_connection_is_reused_between_complete_transactions() -> None:
    handler, port = CountingSink(), free_port()
    ctl = start(handler, port)
    try:
        codes = asyncio.run(relay_all(RelayPool(), port, [request(i) for i in range(3)]))
    finally:
        ctl.stop()
    assert codes == [250, 250, 250]
    assert [m.data.split(b"\r\n")[1] for m in handler.messages] == [
        b"Subject: m0",
        b"Subject: m1",
        b"Subject: m2",
    ]
    assert all(m.rcpts == ["b@example.net", "c@example.net"] for m in handler.messages)
    assert handler.connections == 1


def test_next_hop_closing_an_idle_connection_costs_no_message() -> None:
    handler, port = CountingSink(), free_port()

    async def scenario() -> list[int]:
        pool = RelayPool()
        first = await relay_all(pool, port, [request(1)])
        # The next hop restarts while our connection sits idle.
        await asyncio.to_thread(ctl_box[0].stop)
        ctl_box[0] = await asyncio.to_thread(start, handler, port)
        return first + await relay_all(pool, port, [request(2)])

    ctl_box = [start(handler, port)]
    try:
        codes = asyncio.run(scenario())
    finally:
        ctl_box[0].stop()
    assert codes == [250, 250]
    assert len(handler.messages) == 2
    assert handler.connections == 2


def test_xforward_of_one_message_never_leaks_into_the_next() -> None:
    handler, port = CountingSink(), free_port()
    ctl = start(handler, port)
    try:
        codes = asyncio.run(
            relay_all(
                RelayPool(),
                port,
                [request(1, {"ADDR": "192.0.2.7", "HELO": "client.example"}), request(2)],
            )
        )
    finally:
        ctl.stop()
    assert codes == [250, 250]
    assert handler.messages[0].xforward == {"ADDR": "192.0.2.7", "HELO": "client.example"}
    # The second message sent no XFORWARD: it must not inherit the first one's client.
    assert handler.messages[1].xforward == {}
