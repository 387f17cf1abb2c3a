"""Shapes that phishing uses and ordinary mail rarely does; limits crossed while parsing."""

from __future__ import annotations

from collections.abc import Iterable

from filters.context import Context
from filters.types import BrandClaim, Features, Finding

RULES = {
    "HTML_FORM": "The message contains a form that posts somewhere",
    "HTML_ATTACHMENT": "An HTML file is attached (a login page that opens locally)",
    "LIMIT_EXCEEDED": "A parsing limit was crossed; the rest was not analysed",
    "FROM_MALFORMED": "The From header has no usable address (none, no domain, or no top-level "
    "domain): mail software always writes one",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    forms = [link.host_unicode or link.url[:60] for link in f.links if link.where == "html-form"]
    if forms:
        yield Finding("HTML_FORM", (f"form posts to {', '.join(sorted(set(forms))[:3])}",))
    html_files = [
        p.filename or p.content_type
        for p in f.attachments
        if p.content_type in ("text/html", "application/xhtml+xml")
        or (p.filename or "").lower().endswith((".html", ".htm", ".shtml", ".xhtml"))
    ]
    if html_files:
        yield Finding("HTML_ATTACHMENT", (f"attached: {', '.join(html_files[:3])}",))
    problem = _from_problem(f)
    if problem:
        yield Finding("FROM_MALFORMED", (problem,))
    if f.limit_hits:
        yield Finding("LIMIT_EXCEEDED", (f"limits crossed: {', '.join(f.limit_hits)}",))


def _from_problem(f: Features) -> str | None:
    addr = f.from_addr
    if addr is None:
        return "no From header"
    if not addr.address:
        return f"From has no address ({addr.display[:60]!r})" if addr.display else "empty From"
    if "." not in addr.domain.strip("."):
        return f"From domain {addr.domain!r} has no top-level domain"
    return None
