"""The admin's allow and block lists (config/allow_block.toml), as findings like any other.

What SpamAssassin's welcomelist_from / welcomelist_auth / blocklist_from, Rspamd's multimap and
amavis's wblist do, with each entry that matched named in the evidence, so that nobody has to
guess why a message passed. An address or domain entry matches the From header and the
envelope sender; it is spoofable, and weighs less than an `authenticated` entry, which needs a
DKIM signature (ours, or one a trusted authserv-id verified) or a trusted DMARC pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from filters import auth
from filters.checks._common import sample
from filters.context import AccessList, Context
from filters.registry import domain_in
from filters.types import Address, BrandClaim, Features, Finding

RULES = {
    "ALLOWLIST_FROM": "The sender address or domain is on the allow list (not authenticated)",
    "ALLOWLIST_AUTH": "An authenticated domain (DKIM d=, DMARC) is on the allow list",
    "ALLOWLIST_LINK": "Every link goes to a domain on the allow list",
    "BLOCKLIST_FROM": "The sender address or domain is on the block list",
    "BLOCKLIST_AUTH": "An authenticated domain (DKIM d=, DMARC) is on the block list",
    "BLOCKLIST_LINK": "A link goes to a domain on the block list",
}


def _senders(f: Features) -> list[tuple[str, Address]]:
    out = []
    if f.from_addr is not None and f.from_addr.address:
        out.append(("From", f.from_addr))
    if f.return_path is not None and f.return_path.address:
        out.append(("envelope sender", f.return_path))
    return out


def _sender_hits(f: Features, lst: AccessList) -> list[str]:
    hits = []
    for where, a in _senders(f):
        address = a.address.lower()
        if address in lst.addresses:
            hits.append(f"{where} {address} is listed")
        elif a.domain and (entry := domain_in(a.domain, lst.domains)):
            hits.append(f"{where} {address} is in listed domain {entry}")
    return list(dict.fromkeys(hits))


def _auth_hits(f: Features, lst: AccessList) -> list[str]:
    hits = []
    for dom in auth.dkim_pass_domains(f.auth):
        if entry := domain_in(dom, lst.authenticated):
            hits.append(f"DKIM signature of {dom} verified; listed {entry}")
    dmarc = auth.dmarc_pass_domain(f.auth)
    if dmarc and (entry := domain_in(dmarc, lst.authenticated)):
        hits.append(f"DMARC pass for {dmarc}; listed {entry}")
    return hits


def _link_hosts(f: Features) -> list[str]:
    return [link.host for link in f.links if link.host and link.scheme in ("http", "https", "")]


def _listed_hosts(hosts: Iterable[str], lst: AccessList) -> list[tuple[str, str]]:
    return [(h, e) for h in dict.fromkeys(hosts) if (e := domain_in(h, lst.link_domains))]


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    allow, block = ctx.access.allow, ctx.access.block
    if not allow and not block:  # the shipped, empty lists: nothing to look up
        return
    if hits := _sender_hits(f, block):
        yield Finding("BLOCKLIST_FROM", tuple(hits))
    if hits := _auth_hits(f, block):
        yield Finding("BLOCKLIST_AUTH", tuple(hits))
    hosts = _link_hosts(f)
    if blocked := _listed_hosts(hosts, block):
        yield Finding(
            "BLOCKLIST_LINK", (f"links to {sample(f'{h} (listed {e})' for h, e in blocked)}",)
        )
    if hits := _auth_hits(f, allow):
        yield Finding("ALLOWLIST_AUTH", tuple(hits))
    elif hits := _sender_hits(f, allow):
        # Only without an authenticated entry: the two say the same, and the spoofable one
        # must not add to the trusted one.
        yield Finding("ALLOWLIST_FROM", tuple(hits))
    allowed = _listed_hosts(hosts, allow)
    if hosts and len(allowed) == len(set(hosts)):
        yield Finding(
            "ALLOWLIST_LINK",
            (f"every link goes to {sample(f'{h} (listed {e})' for h, e in allowed)}",),
        )
