"""Lookalike domains: each technique fires on a typical phishing host, near misses stay quiet.

The registry is built here so that the cases do not move when the shipped brand data changes;
one smoke test at the end runs the shipped registry against its own domains.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.checks import lookalike as check
from filters.context import Context
from filters.lookalike import TECHNIQUES, LookalikeIndex, classify, segment
from filters.registry import Brand, BrandRegistry, Lexicon, Lists
from filters.types import Address, AuthResult, BrandClaim, Features, Limits, Link


def _brand(
    key: str, tokens: tuple[str, ...], sender: tuple[str, ...], link: tuple[str, ...] = ()
) -> Brand:
    return Brand(
        key=key,
        name=key.title(),
        category="test",
        names=(key,),
        context_names=(),
        tokens=tokens,
        sender_domains=sender,
        link_domains=link,
        source="tests/test_lookalike.py",
    )


REG = BrandRegistry(
    {
        b.key: b
        for b in (
            _brand(
                "paypal",
                ("paypal",),
                ("paypal.com", "e.paypal.com", "paypal.co.uk"),
                ("paypal-community.com", "paypalobjects.com"),
            ),
            _brand(
                "amazon",
                ("amazon",),
                ("amazon.com", "amazon.co.uk", "amazon.de", "amazonses.com"),
                ("amazon.com.au", "media-amazon.com"),
            ),
            _brand("dhl", ("dhl",), ("dhl.com", "dhl.de")),
            _brand("ups", ("ups",), ("ups.com",)),
            _brand("ing", ("ing",), ("ing.com", "ing.nl")),
            _brand("apple", ("apple", "icloud"), ("apple.com", "icloud.com", "email.apple.com")),
            _brand("chase", ("chase",), ("chase.com",)),
            _brand("microsoft", ("microsoft",), ("microsoft.com", "bounce.esp.example")),
            _brand("hsbc", ("hsbc",), ("hsbc.com", "hsbcnet.com")),
            _brand("cra", ("canadarevenue",), ("canada.ca",)),
            _brand("hp", ("hp",), ("hp.com", "hpsmart.com")),
            _brand("windows", ("windows",), ("windows.com",)),
            _brand("yahoo", ("yahoo",), ("yahoo.com",)),
        )
    }
)


# --------------------------------------------------------------------------- classify()

FIRES = [
    # homoglyphs: Cyrillic "а" in pаypal, Cyrillic "о" in amazоn, accented "ó", Greek "ο"
    ("xn--pypal-4ve.com", "homoglyph", "paypal", "paypal.com"),
    ("pаypal.com", "homoglyph", "paypal", "paypal.com"),
    ("xn--amazn-mye.com", "homoglyph", "amazon", "amazon.com"),
    ("amazón.com", "homoglyph", "amazon", "amazon.com"),
    ("micrοsoft.com.evil.net", "subdomain", "microsoft", "microsoft.com"),
    ("xn--pypal-secure-x9j.com", "homoglyph", "paypal", "paypal.com"),  # pаypal-secure
    # typos of labels of 5+ characters
    ("amazonn.com", "typo-insertion", "amazon", "amazon.com"),
    ("pay-pal.com", "typo-insertion", "paypal", "paypal.com"),
    ("amzon.com", "typo-omission", "amazon", "amazon.com"),
    ("amaozn.com", "typo-transposition", "amazon", "amazon.com"),
    ("paypak.com", "typo-substitution", "paypal", "paypal.com"),  # keyboard neighbour
    ("paypa1.com", "typo-substitution", "paypal", "paypal.com"),  # 1 for l
    ("arnazon.com", "typo-substitution", "amazon", "amazon.com"),  # rn for m
    ("micr0soft.com", "typo-substitution", "microsoft", "microsoft.com"),
    ("m1crosoft.net", "typo-substitution", "microsoft", "microsoft.com"),  # 1 for i
    ("app1e.com", "typo-substitution", "apple", "apple.com"),  # five letters, look-alike
    ("paypa1-secure.com", "typo-substitution", "paypal", "paypal.com"),
    ("amazom-rewards.com", "typo-substitution", "amazon", "amazon.com"),
    ("microsofr.com", "typo-substitution", "microsoft", "microsoft.com"),  # keyboard neighbour
    # combosquats
    ("paypal-secure-login.com", "combosquat", "paypal", "paypal.com"),
    ("secure-paypal.com", "combosquat", "paypal", "paypal.com"),
    ("amazonrewards.shop", "combosquat", "amazon", "amazon.com"),
    ("myamazon-prime.info", "combosquat", "amazon", "amazon.com"),
    ("dhl-parcel-fees.net", "combosquat", "dhl", "dhl.com"),
    ("upsdelivery.com", "combosquat", "ups", "ups.com"),  # short token starting its word
    ("amazon24.com", "combosquat", "amazon", "amazon.com"),  # digits separate words
    ("amazon2.com", "combosquat", "amazon", "amazon.com"),  # not an insertion typo
    ("paypal-com.info", "combosquat", "paypal", "paypal.com"),
    # the brand domain or token left of an unrelated registrable domain
    ("paypal.com.secure-login.example", "subdomain", "paypal", "paypal.com"),
    ("amazon.co.uk.verify-id.info", "subdomain", "amazon", "amazon.co.uk"),
    ("www-paypal-com.evil.net", "subdomain", "paypal", "paypal.com"),
    ("paypa1.com.evil.net", "subdomain", "paypal", "paypal.com"),
    ("paypal-login.evil.com", "subdomain", "paypal", "paypal.com"),
    # the brand's label under another suffix
    ("paypal.co", "tld-swap", "paypal", "paypal.com"),
    ("amazon.shop", "tld-swap", "amazon", "amazon.com"),
    ("dhl.co", "tld-swap", "dhl", "dhl.com"),
]


@pytest.mark.parametrize(("host", "technique", "brand", "imitated"), FIRES)
def test_fires(host: str, technique: str, brand: str, imitated: str) -> None:
    im = classify(host, REG)
    assert im is not None, host
    assert (im.technique, im.brand, im.imitated) == (technique, brand, imitated)
    assert im.technique in TECHNIQUES
    assert im.detail
    assert not im.weak


def test_every_technique_has_a_firing_case() -> None:
    assert {t for _, t, _, _ in FIRES} == set(TECHNIQUES)


NEAR_MISSES = [
    "paypal.com",  # the brand's own domain
    "www.paypal.com",  # a subdomain of it
    "E.PayPal.com.",  # case and trailing dot
    "paypal-community.com",  # a link domain of the brand
    "www.amazon.com.au",  # a link domain with a two-label suffix
    "amazonses.com",  # the brand's own ESP domain
    "icloud.com",  # a second token that is also a domain of the brand
    "pineapple.com",  # "apple" ends a longer word that is not a lure word
    "applebees.com",  # "apple" starts a longer word
    "groups.io",  # "ups" inside a word
    "mailing-list.org",  # "ing" ends a word; short tokens must start theirs
    "singapore.sg",  # "ing" inside a word
    "myups.com",  # short token glued after letters: too common inside words
    "hsbcnet.com",  # listed for HSBC; and "net" after a short token is not a lure word
    "dhlogistics-careers.com",  # "dhl" glued into "dhlogistics", a word of its own
    "amazonaws.com",  # not a lure word after the token; free-hosting lists cover its abuse
    "foo.s3.amazonaws.com",  # same, with subdomains
    "amazonas.gov.br",  # a Brazilian state, "as" is not a lure word
    "chose.com",  # a word one keyboard-distant letter from "chase"
    "apples.com",  # plural of a five-letter token
    "schwabe.de",  # a trailing "e" reads as another name, not a typo
    "trust-wallet.com",  # "trust" is a lure word, not a typo of a "truist"-like label
    "sendgrid.net",  # an ESP
    "esp.example",  # the ESP that one brand lists a subdomain of: not a brand label
    "example.com",  # unrelated
    "xn--fiqs8s.xn--fiqs8s",  # 中国.中国, an IDN in another script imitates nothing Latin
    "xn--fiqz9s.com",  # Chinese label under .com
    "xn--mller-kva.de",  # müller.de: an accented word that folds to no brand
    "uk.my.yahoo.comm",  # a typo'd TLD (.comm) cannot be a registered swap
    "paypal.xn--p1ai",  # paypal.рф: an IDN country code, a weak hint only
    "apple.slashdot.org",  # only a weak hint (see test_weak_hints), not an imitation
    "amazon.fr",  # the brand's own country site the registry does not list: a weak hint
    "canada.com",  # canada.ca lends no label: "canada" carries none of the brand's tokens
    "hipsmart.com",  # one letter from the domain label "hpsmart": typos are of tokens only
    "window.net",  # a singular, not a typo of the token "windows"
    "microsofv.com",  # a bit flip: a memory error, not a reader's slip (mycell/mybell)
    "paypal.net",  # brands hold their name under .net/.org: only a weak hint
    "192.0.2.10",  # an IP literal
    "[2001:db8::1]",  # an IPv6 literal
    "localhost",  # no suffix
    "",  # nothing
]


@pytest.mark.parametrize("host", NEAR_MISSES)
def test_near_misses(host: str) -> None:
    im = classify(host, REG)
    assert im is None or im.weak, (host, im)


def test_weak_hints() -> None:
    # A section of a news site or a SaaS tenant: a hint the check uses only under a claim.
    im = classify("apple.slashdot.org", REG)
    assert im is not None and im.weak and im.technique == "subdomain" and im.brand == "apple"
    # A country site of the brand missing from the registry, likewise.
    im = classify("amazon.fr", REG)
    assert im is not None and im.weak and im.technique == "tld-swap"
    im = classify("paypal.net", REG)
    assert im is not None and im.weak and im.technique == "tld-swap"
    # .co is registered for its likeness to .com: a plain swap.
    im = classify("amazon.co", REG)
    assert im is not None and not im.weak


def test_lure_word_recorded() -> None:
    im = classify("paypal-secure-login.com", REG)
    assert im is not None and im.lure == "secure"
    plain = classify("amazon24.com", REG)
    assert plain is not None and plain.lure == "" and "24" in plain.detail


def test_unicode_and_punycode_agree() -> None:
    assert classify("pаypal.com", REG) == classify("xn--pypal-4ve.com", REG)


def test_segment() -> None:
    assert segment("securelogin") == ("secure", "login")
    assert segment("pine") is None
    assert segment("") == ()


def test_index_is_reused_and_cached() -> None:
    idx = LookalikeIndex(REG)
    assert idx.classify("paypal.co") is idx.classify("paypal.co")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_never_raises(host: str) -> None:
    im = classify(host, REG)
    assert im is None or im.technique in TECHNIQUES


# --------------------------------------------------------------------------- the check


def _addr(addr: str, display: str = "") -> Address:
    local, _, domain = addr.partition("@")
    return Address(display, addr, local, domain, domain)


def _link(host: str, where: str = "html-a", redirect_to: str | None = None) -> Link:
    return Link(
        url=f"https://{host}/x",
        scheme="https",
        host=host,
        host_unicode=host,
        registrable=host,
        shown=None,
        where=where,
        redirect_to=redirect_to,
    )


def _features(**kw: Any) -> Features:
    base: dict[str, Any] = {
        "from_addr": _addr("news@example.org"),
        "sender": None,
        "reply_to": (),
        "return_path": None,
        "subject": "",
        "subject_norm": "",
        "display_norm": "",
        "body": "",
        "links": (),
        "image_alts": (),
        "dkim_domains": (),
        "auth": (),
        "attachments": (),
        "has_html": True,
        "defects": (),
        "limit_hits": (),
    }
    base.update(kw)
    return Features(**base)


CTX = Context(
    registry=REG,
    lists=Lists(free_hosting=frozenset({"blogspot.com"}), esp_domains=frozenset({"sendgrid.net"})),
    lexicon=Lexicon(),
    limits=Limits(),
)
CLAIM = BrandClaim("paypal", "Paypal", ("display-name",), ("paypal",), 1.0)


def _run(f: Features, claim: BrandClaim | None = None) -> dict[str, Any]:
    return {x.rule: x for x in check.run(f, claim, CTX)}


def test_check_sender_reply_and_links() -> None:
    f = _features(
        from_addr=_addr("service@paypa1-secure.com", "PayPal"),
        reply_to=(_addr("help@secure-paypal.com"),),
        return_path=_addr("bounce@paypa1-secure.com"),
        links=(
            _link("amazon.co.uk.verify-id.info"),
            _link("amazon.co.uk.verify-id.info", where="text"),
            _link("www.paypal.com"),
        ),
    )
    found = _run(f, CLAIM)
    assert set(found) == {
        "LOOKALIKE_SENDER_DOMAIN",
        "LOOKALIKE_REPLY_DOMAIN",
        "LOOKALIKE_LINK_DOMAIN",
    }
    sender = found["LOOKALIKE_SENDER_DOMAIN"]
    assert sender.factor == 1.0
    assert "paypa1-secure.com imitates paypal.com (typo-substitution" in sender.evidence[0]
    assert "claims to be Paypal" in sender.evidence[0]
    link = found["LOOKALIKE_LINK_DOMAIN"]
    assert len(link.evidence) == 1  # one host, counted once
    assert "puts amazon.co.uk in a subdomain of verify-id.info" in link.evidence[0]


def test_check_factors() -> None:
    swap = _run(_features(from_addr=_addr("a@paypal.co")))["LOOKALIKE_SENDER_DOMAIN"]
    assert swap.factor == 0.6
    combo = _run(_features(from_addr=_addr("a@amazon24.com")))["LOOKALIKE_SENDER_DOMAIN"]
    assert combo.factor == 0.8
    lure = _run(_features(from_addr=_addr("a@amazonrewards.shop")))["LOOKALIKE_SENDER_DOMAIN"]
    assert lure.factor == 1.0


def test_check_dkim_and_redirect_target() -> None:
    f = _features(
        dkim_domains=("paypal-secure-login.com",),
        links=(_link("t.example.net", redirect_to="https://amaz0n.com/login"),),
    )
    found = _run(f)
    assert "DKIM d= domain paypal-secure-login.com" in found["LOOKALIKE_SENDER_DOMAIN"].evidence[0]
    assert "amaz0n.com" in found["LOOKALIKE_LINK_DOMAIN"].evidence[0]


def test_check_image_links_count_half() -> None:
    f = _features(links=(_link("paypa1.com", where="html-img"),))
    assert _run(f)["LOOKALIKE_LINK_DOMAIN"].factor == 0.5


def test_check_evidence_capped() -> None:
    hosts = ("paypa1.com", "amazonn.com", "amzon.com", "paypal.co", "dhl.co")
    found = _run(_features(links=tuple(_link(h) for h in hosts)))
    assert len(found["LOOKALIKE_LINK_DOMAIN"].evidence) == check.MAX_EVIDENCE


def test_check_weak_subdomain_needs_claim_or_free_host() -> None:
    # A news section named after a brand, in a message that does not claim the brand.
    assert _run(_features(links=(_link("paypal.slashdot.org"),))) == {}
    # The same under a PayPal claim counts, weakly.
    found = _run(_features(links=(_link("paypal.slashdot.org"),)), CLAIM)
    assert found["LOOKALIKE_LINK_DOMAIN"].factor == check.WEAK_FACTOR
    # A free host counts without a claim.
    assert "LOOKALIKE_LINK_DOMAIN" in _run(_features(links=(_link("amazon.blogspot.com"),)))
    # An ESP tenant named after the brand does not count even under a claim.
    assert _run(_features(links=(_link("paypal.sendgrid.net"),)), CLAIM) == {}


def test_check_quiet_on_brand_mail() -> None:
    # Real PayPal mail: own domains in From, Return-Path, DKIM and links.
    f = _features(
        from_addr=_addr("service@paypal.com", "PayPal"),
        return_path=_addr("bounce@e.paypal.com"),
        dkim_domains=("paypal.com",),
        links=(_link("www.paypal.com"), _link("www.paypalobjects.com", where="html-img")),
    )
    assert _run(f, CLAIM) == {}


def test_check_ignores_non_clickable_links() -> None:
    assert _run(_features(links=(_link("paypa1.com", where="attachment"),))) == {}


# --------------------------------------------------------------------------- shipped data


def _shipped() -> BrandRegistry | None:
    try:
        from config.loader import ConfigError, load_config
    except ImportError:
        return None
    try:
        return load_config().registry
    except ConfigError:
        return None


def test_shipped_brands_do_not_imitate_themselves() -> None:
    reg = _shipped()
    if reg is None:
        pytest.skip("shipped configuration does not load yet")
    hits = {}
    for brand in reg.brands.values():
        for dom in (*brand.sender_domains, *brand.link_domains):
            for host in (dom, f"www.{dom}"):
                im = classify(host, reg)
                if im is not None:
                    hits[host] = im
    assert hits == {}


def test_check_weak_hint_dropped_when_brand_authenticated() -> None:
    # Real PayPal mail (DMARC pass, trusted) linking to a country site the registry lacks.
    f = _features(
        from_addr=_addr("service@paypal.com", "PayPal"),
        links=(_link("www.paypal.fr"),),
        auth=(AuthResult("mx.example", "dmarc", "pass", "paypal.com"),),
    )
    assert _run(f, CLAIM) == {}
    # A stranger claiming PayPal and linking there sends the reader to PayPal's own country
    # site (brands hold their name under country codes): no lookalike; the sender is judged
    # by brand_sender instead.
    f = _features(from_addr=_addr("service@paypal-notice.example", "PayPal"), links=f.links)
    assert _run(f, CLAIM) == {}
