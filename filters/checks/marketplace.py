"""Sellers steering buyers off the platform, in relayed buyer-seller messages.

Only with the marketplace profile on ([marketplace] in brandgate.toml, data in
config/marketplace.toml), and only for messages one of its relays carried. Each finding names
the channel: a link or bare domain outside the platform, a QR code leading out, another way
to get in touch (e-mail, phone, WhatsApp, Telegram, WeChat, LINE, social handles), "visit our
website", a discount code to use elsewhere, a review paid for with a reward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from filters import domains
from filters.checks._common import CTA_PLACES, sample, target_domains
from filters.context import Context
from filters.marketplace import Phrase, Relay, matcher, relay_of
from filters.types import BrandClaim, Features, Finding, Link

RULES = {
    "MARKETPLACE_OFFSITE_LINK": "A relayed seller message links or names a domain outside the "
    "marketplace",
    "MARKETPLACE_QR_OFFSITE": "A relayed seller message carries a QR code leading off the "
    "marketplace",
    "MARKETPLACE_CONTACT": "A relayed seller message offers another contact channel (e-mail, "
    "phone, WhatsApp, Telegram, WeChat, LINE, social media)",
    "MARKETPLACE_VISIT_SITE": "A relayed seller message invites the buyer to the seller's own "
    "website or store",
    "MARKETPLACE_COUPON": "A relayed seller message offers a discount code to use elsewhere",
    "MARKETPLACE_PAID_REVIEW": "A relayed seller message offers a reward for a (good) review",
}
_SCAN_CHARS = 20_000
_EMAIL = re.compile(r"(?<![\w.+-])([a-z0-9][a-z0-9._%+-]{0,63})@([a-z0-9-]+(?:\.[a-z0-9-]+)+)")
# "name [at] gmail [dot] com": only with brackets, so that sentences never read as addresses.
_EMAIL_SPELLED = re.compile(
    r"([a-z0-9][a-z0-9._-]{1,63})\s*[\[(]\s*(?:at|@)\s*[\])]\s*([a-z0-9-]+)\s*"
    r"[\[(]\s*(?:dot|\.)\s*[\])]\s*([a-z]{2,12})"
)
_DOMAIN = re.compile(
    r"(?<![\w@./-])((?:www\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?![\w@-])"
)
_PHONE = re.compile(r"(?<![\w+-])((?:\+|00)?\d[\d ().\-/]{6,20}\d)(?![\w-])")
_HANDLE = re.compile(r"(?<![\w@.])@([a-z0-9_](?:[a-z0-9_.]{1,28}[a-z0-9_]))(?![\w@])")
_SENTENCE_END = re.compile(r"[.!?。！？](?:\s|$)|[。！？]")
_NEAR = 60  # characters between a channel's name (or "call us") and its handle or number


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    profile = ctx.marketplace
    relay = relay_of(f, profile)
    if relay is None:
        return
    own = _Own(relay, ctx)
    text = f"{f.subject_norm} \n {f.body[:_SCAN_CHARS]}"
    found = matcher(profile).find(text)
    by_cat: dict[str, list[tuple[int, Phrase]]] = {}
    for pos, phrase in found:
        by_cat.setdefault(phrase.category, []).append((pos, phrase))
    via = f"relayed by {relay.name}"

    links, qr_links, channel_links = _links(f, own, ctx)
    links += [f"names the domain {d}" for d in _bare_domains(text, own, f.links)]
    contacts = channel_links + _channels(by_cat, ctx) + _addresses(text, own)
    contacts += _phones(text, relay, by_cat) + _handles(text, by_cat)
    if links:
        yield Finding("MARKETPLACE_OFFSITE_LINK", (sample(links), via))
    if qr_links:
        yield Finding("MARKETPLACE_QR_OFFSITE", (sample(qr_links), via))
    if contacts:
        yield Finding("MARKETPLACE_CONTACT", (f"other contact: {sample(contacts)}", via))
    visit = _said(by_cat, "visit")
    if visit:
        yield Finding("MARKETPLACE_VISIT_SITE", (f'says "{visit}"', via))
    coupon = _said(by_cat, "coupon")
    if coupon:
        elsewhere = _said(by_cat, "elsewhere")
        # A code alone may be the platform's own promotion; with somewhere else to use it,
        # or a way out beside it, it is steering.
        steering = bool(elsewhere or links or qr_links or contacts or visit)
        where = f' to use "{elsewhere}"' if elsewhere else ""
        yield Finding(
            "MARKETPLACE_COUPON",
            (f'offers a discount code ("{coupon}"){where}', via),
            factor=1.0 if steering else 0.5,
        )
    paid = _paid_review(text, by_cat)
    if paid:
        yield Finding("MARKETPLACE_PAID_REVIEW", (f'review for a reward: "{paid}"', via))


class _Own:
    """Is a domain the platform's own (its relay, its brand's domains, its own_domains)?"""

    def __init__(self, relay: Relay, ctx: Context) -> None:
        self.relay = relay
        self.ctx = ctx
        self.brand = ctx.registry.brands.get(relay.brand) if relay.brand else None
        self.registrables = {domains.registrable(d) or d for d in relay.domains}

    def __call__(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        reg = domains.registrable(domain) or domain
        if reg in self.registrables or any(
            domain == d or domain.endswith("." + d) for d in self.relay.own_domains
        ):
            return True
        ignored = self.ctx.lists.ignored_link_hosts
        if reg in ignored or domain in ignored:
            return True
        brand = self.brand
        registry = self.ctx.registry
        return brand is not None and bool(
            registry.may_link(brand, reg) or registry.may_send(brand, domain)
        )


def _channel_of(link: Link, ctx: Context) -> str | None:
    for channel in ctx.marketplace.channels:
        if any(link.host == h or link.host.endswith("." + h) for h in channel.hosts):
            return channel.name
    return None


def _links(f: Features, own: _Own, ctx: Context) -> tuple[list[str], list[str], list[str]]:
    """(links out, QR codes out, links to messengers), as evidence."""
    out: list[str] = []
    qr: list[str] = []
    channels: list[str] = []
    sources: dict[str, str] = {}
    for code in f.qr_codes:
        sources.setdefault(code.text.strip(), code.source)
    for link in f.links:
        if link.where not in CTA_PLACES or not link.host:
            continue
        if all(own(d) for d in target_domains(link) or [link.host]):
            continue
        channel = _channel_of(link, ctx)
        if link.where == "qr":
            where = sources.get(link.url, "an image")
            qr.append(f"QR code in {where} → {link.url[:120]}")
        elif channel:
            channels.append(f"{channel} link {link.host_unicode}")
        else:
            out.append(f"links to {link.host_unicode}")
    return out, qr, channels


# Top-level domains that are also words or file endings: "arrive.it's", "readme.md" are
# typing, not domains, unless written as one (www. in front, or a path after).
_WORDLIKE_TLDS = frozenset(
    [
        "am", "an", "as", "at", "be", "by", "do", "go", "he", "hi", "id", "im", "in", "is", "it",
        "me", "md", "mov", "my", "no", "of", "ok", "on", "or", "py", "sh", "so", "to", "us", "we",
        "zip",
    ]
)  # fmt: skip


def _bare_domains(text: str, own: _Own, links: tuple[Link, ...]) -> list[str]:
    linked = {link.host for link in links}
    out: list[str] = []
    for match in _DOMAIN.finditer(text):
        host = match.group(1)
        bare = host.removeprefix("www.")
        if host in linked or bare in linked or not domains.registrable(bare) or own(bare):
            continue
        written = host != bare or text[match.end() : match.end() + 1] == "/"
        if not written and bare.rsplit(".", 1)[-1] in _WORDLIKE_TLDS:
            continue
        out.append(bare)
    return list(dict.fromkeys(out))


def _channels(by_cat: dict[str, list[tuple[int, Phrase]]], ctx: Context) -> list[str]:
    names = {f"channel:{c.key}": c.name for c in ctx.marketplace.channels}
    return [
        f'{names.get(cat, cat[8:])} ("{hits[0][1].text}")'
        for cat, hits in by_cat.items()
        if cat.startswith("channel:")
    ]


def _addresses(text: str, own: _Own) -> list[str]:
    out = []
    for match in _EMAIL.finditer(text):
        domain = match.group(2).rstrip(".")
        if not own(domain):
            out.append(f"e-mail address {match.group(1)}@{domain}")
    for match in _EMAIL_SPELLED.finditer(text):
        domain = f"{match.group(2)}.{match.group(3)}"
        if not own(domain):
            out.append(f"e-mail address {match.group(1)}@{domain} (spelled out)")
    return out


def _cue_before(pos: int, cues: list[int]) -> bool:
    return any(0 <= pos - c <= _NEAR for c in cues)


def _phones(text: str, relay: Relay, by_cat: dict[str, list[tuple[int, Phrase]]]) -> list[str]:
    """Phone numbers: 8 to 15 digits, written with a + or 00, or after a word such as "call"
    or a messenger's name. The platform's order numbers are not phone numbers."""
    for pattern in relay.order_patterns:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    cues = [
        pos
        for cat, hits in by_cat.items()
        if cat == "phone" or cat.startswith("channel:")
        for pos, _ in hits
    ]
    out = []
    for match in _PHONE.finditer(text):
        number = match.group(1).strip()
        digits = sum(ch.isdigit() for ch in number)
        if not 8 <= digits <= 15:
            continue
        if number.startswith(("+", "00")) or _cue_before(match.start(), cues):
            out.append(f"phone number {number}")
    return out


def _handles(text: str, by_cat: dict[str, list[tuple[int, Phrase]]]) -> list[str]:
    """@handles next to a channel's name or an invitation to get in touch."""
    cues = [
        pos
        for cat, hits in by_cat.items()
        if cat == "contact" or cat.startswith("channel:")
        for pos, _ in hits
    ]
    return [f"handle @{m.group(1)}" for m in _HANDLE.finditer(text) if _cue_before(m.start(), cues)]


def _said(by_cat: dict[str, list[tuple[int, Phrase]]], cat: str) -> str:
    hits = by_cat.get(cat)
    return hits[0][1].text if hits else ""


def _paid_review(text: str, by_cat: dict[str, list[tuple[int, Phrase]]]) -> str:
    """A review paid for: said outright, or one sentence asking for a good review and
    offering a reward."""
    direct = _said(by_cat, "paid_review")
    if direct:
        return direct
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]

    def sentence(pos: int) -> int:
        return sum(1 for e in ends if e <= pos)

    cats = ("review", "positive", "reward")
    seen: dict[int, dict[str, str]] = {}
    for cat in cats:
        for pos, phrase in by_cat.get(cat, ()):
            seen.setdefault(sentence(pos), {}).setdefault(cat, phrase.text)
    for found in seen.values():
        if all(c in found for c in cats):
            return f"{found['positive']} {found['review']} … {found['reward']}"
    return ""
