"""The production DNS lookup for DKIM keys: a dkimpy-compatible TXT lookup with a small cache.

`make_txt_lookup(...)` returns a `TxtLookup`, a callable `name -> bytes`:
- the joined strings of the first TXT record at that name;
- b"" when the name does not exist or has no TXT record (a permanent "no key");
- raises filters.auth.DnsTempError on timeout, SERVFAIL or when no nameserver can be used.

A TxtLookup pickles as its settings only (the resolver and cache are rebuilt on the other
side), so it can be handed to a process pool; `init_worker` / `worker_lookup` are top-level
functions for a pool initializer that prefers to build one per worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from filters.auth import DnsTempError

# DKIM key records change rarely, but a key rotation must be seen within the hour.
MAX_TTL = 3600.0
# Negative answers without an SOA to say how long they hold.
DEFAULT_NEGATIVE_TTL = 60.0


class _Cache:
    """LRU of name -> (expires_at, answer); an entry never outlives its TTL."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self.lock:
            item = self.items.get(key)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self.items[key]
                return None
            self.items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: bytes, ttl: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        with self.lock:
            self.items[key] = (time.monotonic() + min(ttl, MAX_TTL), value)
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308: a negative answer holds for min(SOA TTL, SOA minimum)."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return DEFAULT_NEGATIVE_TTL


def _query_name(name: bytes | str) -> str | None:
    """The lower-case absolute name to ask for, or None when it cannot be a DNS name."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return None
    name = name.strip().lower()
    if not name:
        return None
    try:
        return dns.name.from_text(name).to_text()
    except dns.exception.DNSException:
        return None


class TxtLookup:
    def __init__(
        self,
        timeout: float = 3.0,
        cache_size: int = 1024,
        nameservers: list[str] | None = None,
        port: int = 53,
    ) -> None:
        self.timeout = float(timeout)
        self.cache_size = cache_size
        self.nameservers = list(nameservers) if nameservers is not None else None
        self.port = port
        self._setup()

    def _setup(self) -> None:
        self.cache = _Cache(self.cache_size)
        self.resolver: dns.resolver.Resolver | None
        try:
            resolver = dns.resolver.Resolver(configure=self.nameservers is None)
        except dns.exception.DNSException:
            # No /etc/resolv.conf: every lookup is a temp failure until one appears.
            self.resolver = None
            return
        if self.nameservers is not None:
            # The port first: the nameservers setter binds each address to the current port.
            resolver.port = self.port
            resolver.nameservers = list(self.nameservers)
        resolver.lifetime = self.timeout
        resolver.timeout = self.timeout
        self.resolver = resolver

    def __getstate__(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "cache_size": self.cache_size,
            "nameservers": self.nameservers,
            "port": self.port,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __call__(self, name: bytes | str, timeout: float | None = None) -> bytes:
        """dkimpy calls this with its own default timeout (5 s); ours is the bound that holds,
        so a caller can shorten a lookup but never lengthen it."""
        qname = _query_name(name)
        if qname is None:
            return b""
        cached = self.cache.get(qname)
        if cached is not None:
            return cached
        lifetime = self.timeout if timeout is None else min(float(timeout), self.timeout)
        answer, ttl = self._resolve(qname, lifetime)
        self.cache.put(qname, answer, ttl)
        return answer

    def _resolve(self, qname: str, lifetime: float) -> tuple[bytes, float]:
        if self.resolver is None:
            raise DnsTempError("no DNS resolver configured")
        try:
            ans = self.resolver.resolve(
                qname, "TXT", lifetime=lifetime, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            return b"", _negative_ttl(next(iter(responses.values()), None))
        except dns.resolver.YXDOMAIN:
            return b"", DEFAULT_NEGATIVE_TTL
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"DNS timeout for {qname}") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"no nameserver answered for {qname} (SERVFAIL)") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS error for {qname}: {type(exc).__name__}") from exc
        except OSError as exc:  # network unreachable and friends
            raise DnsTempError(f"DNS unreachable for {qname}: {exc}") from exc
        if ans.rrset is None or not len(ans.rrset):
            return b"", _negative_ttl(ans.response)
        first = next(iter(ans.rrset))
        return b"".join(first.strings), float(ans.rrset.ttl)


def make_txt_lookup(
    timeout: float = 3.0,
    cache_size: int = 1024,
    nameservers: list[str] | None = None,
    port: int = 53,
) -> TxtLookup:
    """A DKIM key lookup; nameservers None means the system's (/etc/resolv.conf)."""
    return TxtLookup(timeout=timeout, cache_size=cache_size, nameservers=nameservers, port=port)


_worker_lookup: TxtLookup | None = None


def init_worker(
    timeout: float = 3.0,
    cache_size: int = 1024,
    nameservers: list[str] | None = None,
    port: int = 53,
) -> None:
    """Process-pool initializer: one lookup (and one cache) per worker process."""
    global _worker_lookup
    _worker_lookup = make_txt_lookup(timeout, cache_size, nameservers, port)


def worker_lookup() -> TxtLookup:
    """The lookup built by init_worker, or a default one if the initializer did not run."""
    global _worker_lookup
    if _worker_lookup is None:
        _worker_lookup = make_txt_lookup()
    return _worker_lookup
