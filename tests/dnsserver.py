"""A tiny authoritative DNS server on 127.0.0.1 for tests: real UDP, real DNS wire format.

    with LoopbackDns({"sel._domainkey.example.com": [b"v=DKIM1; p=..."]}, slow={"x.test"}) as srv:
        lookup = make_txt_lookup(nameservers=["127.0.0.1"], port=srv.port)

Configured names answer their TXT strings, `slow` names never answer (to exercise timeouts),
`servfail` names answer SERVFAIL, everything else is NXDOMAIN with an SOA.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

_SOA = "ns.test. hostmaster.test. 1 3600 600 86400 30"


def _norm(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


class LoopbackDns:
    def __init__(
        self,
        records: Mapping[str, Iterable[bytes]],
        slow: Iterable[str] = (),
        servfail: Iterable[str] = (),
        ttl: int = 300,
    ) -> None:
        self.records = {_norm(k): [bytes(s) for s in v] for k, v in records.items()}
        self.slow = {_norm(n) for n in slow}
        self.servfail = {_norm(n) for n in servfail}
        self.ttl = ttl
        self.queries: list[str] = []  # names asked, in order (to see what the cache saved)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)

    def start(self) -> LoopbackDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> LoopbackDns:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            try:
                wire, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = self._answer(wire)
            if reply is not None:
                self.sock.sendto(reply, addr)

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append(name)
        if name in self.slow:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.records:
            if question.rdtype == dns.rdatatype.TXT and self.records[name]:
                rrset = dns.rrset.from_rdata_list(
                    question.name,
                    self.ttl,
                    [self._txt(s) for s in self.records[name]],
                )
                response.answer.append(rrset)
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(
                dns.rrset.from_text("test.", 30, dns.rdataclass.IN, dns.rdatatype.SOA, _SOA)
            )
        return response.to_wire()

    @staticmethod
    def _txt(value: bytes) -> dns.rdata.Rdata:
        # One TXT record, its text cut into the 255-byte strings the wire format requires.
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
