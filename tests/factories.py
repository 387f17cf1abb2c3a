"""Hand-made Features, Links and a small brand registry for unit tests of checks.

Checks are pure functions of (Features, claim, Context), so their tests build exactly the
message facts they need instead of parsing whole messages.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from filters.context import Context
from filters.domains import registrable, to_unicode
from filters.registry import Brand, BrandRegistry, Lexicon, Lists, LureTerm
from filters.text import normalise
from filters.types import Address, AuthResult, BrandClaim, Features, Limits, Link


def brand(
    key: str, name: str, senders: list[str], links: list[str] | None = None, **kw: Any
) -> Brand:
    return Brand(
        key=key,
        name=name,
        category=kw.get("category", "test"),
        names=tuple(kw.get("names", [name])),
        context_names=tuple(kw.get("context_names", [])),
        tokens=tuple(kw.get("tokens", [key])),
        sender_domains=tuple(senders),
        link_domains=tuple(links or []),
        source="test fixture",
    )


REGISTRY = BrandRegistry(
    {
        b.key: b
        for b in [
            brand("amazon", "Amazon", ["amazon.com", "amazon.co.uk", "amazonses.com"],
                  ["media-amazon.com", "amzn.to"], names=["Amazon", "Amazon.com", "亚马逊"],
                  context_names=["Prime"]),
            brand("paypal", "PayPal", ["paypal.com", "paypal.de"], ["paypalobjects.com"]),
            brand("dhl", "DHL", ["dhl.com", "dhl.de"], tokens=["dhl"]),
            brand("chase", "Chase", ["chase.com"], names=["Chase Bank", "JPMorgan Chase"],
                  context_names=["Chase"], tokens=[]),
        ]
    }
)  # fmt: skip
LISTS = Lists(
    freemail=frozenset({"gmail.com", "hotmail.com", "outlook.com"}),
    shorteners=frozenset({"bit.ly", "tinyurl.com"}),
    redirect_params=frozenset({"url", "u", "redirect"}),
    suspicious_tlds=frozenset({"top", "xyz", "shop"}),
    free_hosting=frozenset({"weebly.com", "firebaseapp.com"}),
    esp_domains=frozenset({"sendgrid.net", "exct.net"}),
)
LEXICON = Lexicon(
    tuple(
        LureTerm(normalise(p), cat, lang)
        for p, cat, lang in [
            ("gift card", "gift", "en"),
            ("cash back", "cashback", "en"),
            ("you have been selected", "selected", "en"),
            ("verify your account", "account", "en"),
            ("within 24 hours", "urgency", "en"),
            ("contact us directly", "offplatform", "en"),
            ("call us", "callback", "en"),
            ("ligue para", "callback", "pt"),
            ("cartão presente", "gift", "pt"),
            ("礼品卡", "gift", "zh"),
        ]
    )
)
CTX = Context(registry=REGISTRY, lists=LISTS, lexicon=LEXICON, limits=Limits())


def addr(text: str, display: str = "") -> Address:
    local, _, domain = text.partition("@")
    return Address(display, text, local, domain.lower(), registrable(domain.lower()))


def link(url: str, where: str = "html-a", shown: str | None = None, **kw: Any) -> Link:
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = (parts.hostname or "").lower()
    return Link(
        url=url,
        scheme=parts.scheme if "://" in url else "",
        host=host,
        host_unicode=to_unicode(host),
        registrable=registrable(host),
        shown=shown,
        where=where,
        **kw,
    )


def features(
    from_: str = "someone@example.org",
    display: str = "",
    subject: str = "",
    body: str = "",
    links: tuple[Link, ...] = (),
    **kw: Any,
) -> Features:
    base = Features(
        from_addr=addr(from_, display),
        sender=None,
        reply_to=(),
        return_path=None,
        subject=subject,
        subject_norm=normalise(subject),
        display_norm=normalise(display),
        body=normalise(body),
        links=links,
        image_alts=(),
        dkim_domains=(),
        auth=(),
        attachments=(),
        has_html=bool(links),
        defects=(),
        limit_hits=(),
    )
    return replace(base, **kw)


def claim(
    key: str = "amazon", where: tuple[str, ...] = ("display-name",), strength: float = 1.0
) -> BrandClaim:
    b = REGISTRY.brands[key]
    return BrandClaim(key, b.name, where, (b.name.lower(),), strength)


def dkim_pass(domain: str, authserv: str = "brandgate") -> AuthResult:
    return AuthResult(authserv, "dkim", "pass", domain)
