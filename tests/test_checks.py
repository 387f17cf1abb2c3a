"""Each rule: a small case that fires and a near miss that must not (with why it is legitimate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from filters.checks import (
    CHECKS,
    allow_block,
    auth_claim,
    brand_sender,
    link_diversion,
    link_mismatch,
    links_suspicious,
    lure,
    marketplace,
    qr,
    reply_to,
    structure,
)
from filters.context import AccessList, AccessLists
from filters.registry import Esp
from filters.types import AuthResult, Features, Finding, Link, Part, QrCode
from tests.factories import CTX, addr, claim, dkim_pass, features, link


def rules_of(found: object) -> set[str]:
    return {f.rule for f in found}  # type: ignore[attr-defined]


Case = tuple[str, Callable[[], tuple[Features, object]], str]
_SENDGRID = Esp(
    "sendgrid", "SendGrid", "esp", ("sendgrid.net",), ("sendgrid.net",), ("sendgrid.net",),
    ("sendgrid.net",), "test",
)  # fmt: skip


def _run(module: object, f: Features, c: object) -> list[Finding]:
    return list(module.run(f, c, CTX))  # type: ignore[attr-defined]


# --------------------------------------------------------------------- brand_sender


def test_sender_unverified_fires_on_brand_name_from_other_domain() -> None:
    f = features("rewards@best-deals-outlet.shop", display="Amazon Rewards")
    found = _run(brand_sender, f, claim())
    assert rules_of(found) == {"BRAND_SENDER_UNVERIFIED"}
    assert "best-deals-outlet.shop" in " ".join(found[0].evidence)


def test_sender_unverified_silent_for_brand_domain() -> None:
    # Amazon's own mail from a subdomain of one of its sender domains, signed by Amazon.
    f = features(
        "shipment-tracking@email.amazon.com", display="Amazon.com", dkim_domains=("amazon.com",)
    )
    assert _run(brand_sender, f, claim()) == []


def test_brand_domain_signed_only_by_a_stranger_fires() -> None:
    f = features(
        "naoresponder@paypal.com",
        display="PayPal",
        dkim_domains=("soldrun.com",),
        return_path=addr("naoresponder@paypal.com"),
    )
    found = _run(brand_sender, f, claim("paypal"))
    assert rules_of(found) == {"BRAND_DOMAIN_FORGED"}
    assert "signed only by soldrun.com" in found[0].evidence


def test_brand_domain_with_a_stranger_taking_bounces_is_forged() -> None:
    f = features("service@paypal.com", display="PayPal", return_path=addr("x@bulk-sender.example"))
    found = _run(brand_sender, f, claim("paypal"))
    assert rules_of(found) == {"BRAND_DOMAIN_FORGED"}
    assert any("bulk-sender.example" in e for e in found[0].evidence)


def test_brand_domain_signed_by_its_esp_only_is_weak() -> None:
    # Brands send through ESPs; the ESP's signature and bounce domain are no sign of a spoof.
    f = features(
        "news@paypal.com",
        display="PayPal",
        dkim_domains=("sendgrid.net",),
        return_path=addr("bounces+123@sendgrid.net"),
    )
    found = _run(brand_sender, f, claim("paypal"))
    assert rules_of(found) == {"BRAND_DOMAIN_UNAUTHENTICATED"}  # never FORGED


def test_brand_domain_unsigned_is_unauthenticated_and_lists_are_weaker() -> None:
    unsigned = features("service@paypal.com", display="PayPal")
    found = _run(brand_sender, unsigned, claim("paypal"))
    assert rules_of(found) == {"BRAND_DOMAIN_UNAUTHENTICATED"}
    assert [x.factor for x in found] == [1.0]
    # A mailing list re-signs and rewrites the envelope: that is not evidence of a spoof.
    listed = replace(
        unsigned,
        mailing_list=True,
        dkim_domains=("lists.example.org",),
        return_path=addr("b@lists.example.org"),
    )
    found = _run(brand_sender, listed, claim("paypal"))
    assert rules_of(found) == {"BRAND_DOMAIN_UNAUTHENTICATED"}
    assert [x.factor for x in found] == [0.5]


def test_freemail_fires_with_claim() -> None:
    f = features("paypal.service@gmail.com", display="PayPal Service")
    assert rules_of(_run(brand_sender, f, claim("paypal"))) == {
        "BRAND_SENDER_UNVERIFIED",
        "BRAND_FREEMAIL_SENDER",
    }


def test_freemail_silent_without_claim() -> None:
    # A person writing from Gmail claims no brand: only the no-claim finding (a negative one).
    found = _run(brand_sender, features("jane@gmail.com", display="Jane Doe"), None)
    assert rules_of(found) == {"NO_BRAND_CLAIM"}


def test_no_brand_claim_fires_only_without_a_claim() -> None:
    f = features("news@shop.example", display="Shop News")
    assert rules_of(_run(brand_sender, f, None)) == {"NO_BRAND_CLAIM"}
    # Near miss: the same sender speaking as Amazon is judged as a claim instead.
    assert "NO_BRAND_CLAIM" not in rules_of(_run(brand_sender, f, claim()))


def test_mention_unverified_fires_for_claims_made_only_in_subject_or_body() -> None:
    f = features("news@deals-outlet.example", display="Deals", subject="Your Amazon account")
    found = _run(brand_sender, f, claim(where=("subject",), strength=0.6))
    assert rules_of(found) == {"BRAND_MENTION_UNVERIFIED"}
    assert found[0].factor == 0.6
    # Near miss: a claim in the display name is the stronger rule, not this one.
    named = _run(brand_sender, f, claim(where=("display-name", "subject")))
    assert rules_of(named) == {"BRAND_SENDER_UNVERIFIED"}


def test_sender_vendor_fires_for_a_vendor_the_brand_uses() -> None:
    vendored = replace(CTX.registry.brands["amazon"], esps=("sendgrid",))
    reg = type(CTX.registry)({**CTX.registry.brands, "amazon": vendored}, {"sendgrid": _SENDGRID})
    ctx = replace(CTX, registry=reg)
    f = features("amazon@u123.wl.sendgrid.net", display="Amazon")
    found = list(brand_sender.run(f, claim(), ctx))
    assert rules_of(found) == {"BRAND_SENDER_VENDOR"}
    assert found[0].factor == 0.5  # a vendor the brand is known to use: weaker
    # The same vendor mailing for a brand not known to use it: the full factor.
    other = list(brand_sender.run(f, claim("paypal"), ctx))
    assert rules_of(other) == {"BRAND_SENDER_VENDOR"} and other[0].factor == 1.0
    # Near miss: an ordinary domain is not a vendor's.
    plain = features("amazon@shop-outlet.example", display="Amazon")
    assert "BRAND_SENDER_VENDOR" not in rules_of(list(brand_sender.run(plain, claim(), ctx)))


def test_domain_spoof_fires_on_trusted_dmarc_fail() -> None:
    f = features(
        "service@paypal.com",
        display="PayPal",
        auth=(AuthResult("mx.example", "dmarc", "fail", "paypal.com"),),
    )
    assert rules_of(_run(brand_sender, f, claim("paypal"))) == {"BRAND_DOMAIN_SPOOF"}


def test_domain_spoof_silent_on_dmarc_pass() -> None:
    # The real PayPal, DMARC passing at our trusted receiver.
    f = features(
        "service@paypal.com",
        display="PayPal",
        auth=(AuthResult("mx.example", "dmarc", "pass", "paypal.com"),),
    )
    assert _run(brand_sender, f, claim("paypal")) == []


# --------------------------------------------------------------------- auth_claim


def test_authenticated_fires_on_aligned_brand_dkim() -> None:
    f = features("ship@amazon.com", display="Amazon", auth=(dkim_pass("amazon.com"),))
    assert rules_of(_run(auth_claim, f, claim())) == {"BRAND_AUTHENTICATED"}


def test_authenticated_silent_for_esp_signature() -> None:
    # An ESP's signature authenticates the ESP's customer, not the brand.
    f = features("deals@promo.example", display="Amazon", auth=(dkim_pass("sendgrid.net"),))
    assert _run(auth_claim, f, claim()) == []


# --------------------------------------------------------------------- link_diversion


def test_diversion_fires_when_links_leave_the_brand() -> None:
    f = features(
        "a@amazon-gifts.example",
        links=(link("https://best-deals-outlet.shop/claim", shown="Claim your gift"),),
    )
    found = _run(link_diversion, f, claim())
    assert rules_of(found) == {"BRAND_LINK_DIVERSION"}
    assert "best-deals-outlet.shop" in found[0].evidence[0]


def test_diversion_silent_for_brand_links_and_brand_esp_tracking() -> None:
    # Amazon's own mail: its links, its CDN images, and its ESP click tracking.
    f = features(
        "ship@amazon.com",
        links=(
            link("https://www.amazon.com/orders"),
            link("https://click.exct.net/?qs=1"),
            link("https://m.media-amazon.com/logo.png", where="html-img"),
        ),
    )
    assert rules_of(_run(link_diversion, f, claim())) == {"BRAND_LINKS_OWN"}


def _one_link_of_ten_out(sender: str) -> Finding:
    own = tuple(link(f"https://www.amazon.com/p/{i}") for i in range(9))
    f = features(sender, display="Amazon", links=(*own, link("https://partner-shop.example/x")))
    (found,) = _run(link_diversion, f, claim())
    return found


def test_a_stray_link_from_the_brands_own_domain_counts_little() -> None:
    # Brands link to partners and trackers: one link in ten leaving counts a third.
    found = _one_link_of_ten_out("news@amazon.com")
    assert found.rule == "BRAND_DOMAIN_LINKS_OUT" and found.factor == 0.33


def test_near_miss_the_same_links_from_a_stranger_count_more() -> None:
    found = _one_link_of_ten_out("news@deals-outlet.example")
    assert found.rule == "BRAND_LINK_DIVERSION" and found.factor == 0.55


# The brand runs a service where anyone publishes pages (forms, sites): its host is free hosting.
_HOSTING_CTX = replace(
    CTX, lists=replace(CTX.lists, free_hosting=CTX.lists.free_hosting | {"pages.amazon.com"})
)


def test_brand_links_own_not_earned_by_a_page_anyone_publishes_on_the_brands_service() -> None:
    # A form on the brand's own publishing service, sent through the brand's own mailer:
    # the page is whoever made it, so the mail earns no "links stay with the brand".
    f = features("forms-noreply@amazon.com", links=(link("https://pages.amazon.com/f/abc"),))
    assert "BRAND_LINKS_OWN" not in rules_of(list(link_diversion.run(f, claim(), _HOSTING_CTX)))


def test_near_miss_the_brands_own_pages_still_earn_links_own() -> None:
    f = features("ship@amazon.com", links=(link("https://www.amazon.com/orders"),))
    assert rules_of(list(link_diversion.run(f, claim(), _HOSTING_CTX))) == {"BRAND_LINKS_OWN"}


def test_links_own_needs_the_brand_as_sender() -> None:
    # A stranger claiming Amazon with only Amazon links wants a reply or a call: no credit.
    f = features("x@random-host.example", links=(link("https://www.amazon.com/orders"),))
    assert _run(link_diversion, f, claim()) == []


def test_diversion_follows_redirect_targets() -> None:
    f = features(
        "x@amazon-deals.example",
        links=(
            link(
                "https://www.amazon.com/r?url=https://evil-site.net/",
                redirect_to="https://evil-site.net/",
            ),
        ),
    )
    assert rules_of(_run(link_diversion, f, claim())) == {"BRAND_LINK_DIVERSION"}


def test_links_out_from_the_brands_own_domain_is_its_own_rule() -> None:
    f = features("news@amazon.com", links=(link("https://partner-shop.example/deal"),))
    found = _run(link_diversion, f, claim())
    assert rules_of(found) == {"BRAND_DOMAIN_LINKS_OUT"}
    # Signed by the brand's domain: half as telling (a brand linking to a partner).
    signed = replace(f, dkim_domains=("amazon.com",))
    assert _run(link_diversion, signed, claim())[0].factor < found[0].factor


def test_disguised_display_names_and_subjects_fire() -> None:
    from filters.checks import disguise

    for display in ("Т\u200bruѕt Wаllet", "PayPa1 Service", "WaImart Hello", "𝖣𝖨𝖤 𝖫ö𝗌𝗎𝗇𝗀"):
        f = features("x@example.org", display=display)
        assert rules_of(_run(disguise, f, None)) == {"TEXT_DISGUISED"}, display
    assert _run(disguise, features("x@example.org", subject="Y0ur acc0unt"), None)[0].factor < 1


def test_disguise_silent_for_plain_names_in_any_script() -> None:
    from filters.checks import disguise

    # A Russian name, German umlauts, an order number, CamelCase: ordinary writing.
    for display in ("Иван Петров", "Müller GmbH", "Order NP113951", "PayPal", "McIntosh"):
        f = features("x@example.org", display=display, subject="Bestellung 4711")
        assert _run(disguise, f, None) == [], display


# --------------------------------------------------------------------- link_mismatch


def test_mismatch_fires_when_shown_host_differs() -> None:
    f = features(links=(link("http://login-verify.net/pp", shown="https://www.paypal.com/signin"),))
    found = _run(link_mismatch, f, None)
    assert rules_of(found) == {"LINK_TEXT_MISMATCH"}
    assert found[0].factor == 1.0  # a brand's address shown


@pytest.mark.parametrize(
    ("href", "shown", "why"),
    [
        ("https://www.amazon.co.uk/x", "www.amazon.com", "same label, other public suffix"),
        ("https://click.exct.net/?q=1", "www.shop.example", "the sender's ESP click tracking"),
        ("https://links.example.org/t/1", "www.shop.example", "the sender's own tracking domain"),
        ("https://www.amazon.com/x", "Click here for details.", "text, not an address"),
    ],
)
def test_mismatch_near_misses(href: str, shown: str, why: str) -> None:
    f = features("news@example.org", links=(link(href, shown=shown),))
    assert _run(link_mismatch, f, None) == [], why


# --------------------------------------------------------------------- links_suspicious


@pytest.mark.parametrize(
    ("lk", "rule"),
    [
        (link("https://bit.ly/3xYz"), "LINK_SHORTENER"),
        (link("http://192.0.2.7/paypal/login", is_ip=True), "LINK_IP_LITERAL"),
        (link("http://paypal.com@evil-site.net/", has_userinfo=True), "LINK_USERINFO"),
        (link("https://secure-login.top/"), "LINK_SUSPICIOUS_TLD"),
        (link("https://site.weebly.com/login"), "LINK_FREE_HOSTING"),
        (
            link(
                "https://track-link.net/r?u=https://evil-site.net/",
                redirect_to="https://evil-site.net/",
            ),
            "LINK_REDIRECTOR",
        ),
    ],
)
def test_suspicious_links_fire(lk: object, rule: str) -> None:
    assert rule in rules_of(_run(links_suspicious, features(links=(lk,)), None))  # type: ignore[arg-type]


def test_data_uri_link_fires_but_inline_image_does_not() -> None:
    page = link("data:text/html;base64,PGgxPkxvZ2luPC9oMT4=", where="html-a")
    page = replace(page, scheme="data", host="", registrable="")
    assert rules_of(_run(links_suspicious, features(links=(page,)), None)) == {"LINK_DATA_URI"}
    # Inline images as data: URIs are ordinary in HTML mail.
    img = replace(page, where="html-img", url="data:image/png;base64,iVBORw0KGgo=")
    assert _run(links_suspicious, features(links=(img,)), None) == []


def test_suspicious_links_near_misses() -> None:
    # An ordinary https link, an image on a shortener-free CDN, and a redirect to the same site.
    f = features(
        links=(
            link("https://www.example.org/page"),
            link("https://192.0.2.8/pixel.gif", where="html-img", is_ip=True),
            link(
                "https://www.example.org/r?u=https://www.example.org/x",
                redirect_to="https://www.example.org/x",
            ),
        )
    )
    assert _run(links_suspicious, f, None) == []


# --------------------------------------------------------------------- lure


def test_lure_fires_on_gift_card_with_claim() -> None:
    f = features(subject="You have been selected", body="Claim your gift card within 24 hours")
    found = {x.rule: x for x in _run(lure, f, claim())}
    assert set(found) == {"LURE_REWARD", "LURE_URGENCY"}
    assert found["LURE_REWARD"].factor == 0.8


def test_lure_account_and_offplatform() -> None:
    f = features(body="Please verify your account. For a better price contact us directly.")
    assert rules_of(_run(lure, f, claim())) == {"LURE_ACCOUNT", "LURE_OFFPLATFORM"}


def test_lure_from_the_brands_own_domain_counts_less() -> None:
    # A carrier's own notice naturally talks about deliveries and deadlines.
    f = features("notify@amazon.com", body="Claim your gift card")
    assert [x.factor for x in _run(lure, f, claim())] == [0.3]


def test_lure_other_languages() -> None:
    f = features(body="Resgate seu cartão presente agora. 您的礼品卡")
    found = _run(lure, f, claim())
    assert rules_of(found) == {"LURE_REWARD"}


def test_lure_weak_without_claim_and_no_partial_words() -> None:
    # "gift cards" in a shop newsletter: still found, but weak without a brand claim;
    # "giftcardholder" is not the phrase.
    found = _run(lure, features(body="Our gift card is back! giftcardholder"), None)
    assert [x.factor for x in found] == [0.21]
    assert _run(lure, features(body="The giftcardholder design sold out"), None) == []


_CALL_BODY = (
    "Your subscription was renewed for $299.99. If you did not make this purchase, "
    "please call us at +1 (805) 248-4054 to cancel."
)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (_CALL_BODY, '"call us at +1 (805) 248-4054"'),
        ("Não reconhece a compra? Ligue para 0800 123 4567 agora.", '"ligue para 0800 123 4567"'),
    ],
)
def test_lure_callback_fires_on_a_number_to_call_and_nothing_to_click(body: str, said: str) -> None:
    found = {x.rule: x for x in _run(lure, features(body=body), claim())}
    assert found["LURE_CALLBACK"].factor == 1.0
    assert said in found["LURE_CALLBACK"].evidence[0]


@pytest.mark.parametrize(
    ("body", "links", "why"),
    [
        (_CALL_BODY, (link("https://renewals.example/cancel"),), "a link to click"),
        ("Invoice 8052484054 was paid on time. Thank you.", (), "a number, no call asked"),
        ("Jane Doe, Sales. Phone: (415) 441-6670", (), "a signature's number"),
        ("Please call us at extension 4054 tomorrow.", (), "too few digits for a number"),
        ("Please call us. Invoice 8052484054 is attached.", (), "the request and the number apart"),
    ],
)
def test_near_miss_lure_callback(body: str, links: tuple[Link, ...], why: str) -> None:
    f = features(body=body, links=links)
    assert "LURE_CALLBACK" not in rules_of(_run(lure, f, claim())), why


def test_lure_callback_tel_links_are_nothing_to_click() -> None:
    f = features(body=_CALL_BODY, links=(link("tel:+18052484054"),))
    assert "LURE_CALLBACK" in rules_of(_run(lure, f, claim()))


# --------------------------------------------------------------------- reply_to


def test_reply_to_freemail_fires() -> None:
    f = features("service@bank-example.com", reply_to=(addr("refunds.desk@gmail.com"),))
    assert rules_of(_run(reply_to, f, None)) == {"REPLY_TO_FREEMAIL"}


def test_reply_to_other_domain_fires() -> None:
    f = features("billing@shop-example.com", reply_to=(addr("desk@collect-refunds.net"),))
    assert rules_of(_run(reply_to, f, claim())) == {"REPLY_TO_DIVERGES"}


def test_reply_to_mailing_list_silent() -> None:
    # Lists set Reply-To to the list address.
    f = features("jane@example.org", reply_to=(addr("talk@lists.example.net"),), mailing_list=True)
    assert _run(reply_to, f, None) == []


def test_reply_to_same_organisation_silent() -> None:
    # Replies to another host of the same registrable domain.
    f = features("news@mail.example.org", reply_to=(addr("help@support.example.org"),))
    assert _run(reply_to, f, None) == []


def test_reply_to_brand_own_domain_silent() -> None:
    # PayPal replying through its German domain.
    f = features("service@paypal.com", reply_to=(addr("hilfe@paypal.de"),))
    assert _run(reply_to, f, claim("paypal")) == []


# --------------------------------------------------------------------- structure


def test_structure_fires_on_form_and_html_attachment() -> None:
    f = features(
        links=(link("https://collect.example/post", where="html-form"),),
        attachments=(Part("text/html", "utf-8", "invoice.html", "attachment", 900, 1),),
    )
    assert rules_of(_run(structure, f, None)) == {"HTML_FORM", "HTML_ATTACHMENT"}


def test_structure_silent_for_pdf_attachment() -> None:
    # An invoice PDF is ordinary business mail.
    f = features(attachments=(Part("application/pdf", None, "invoice.pdf", "attachment", 9000, 1),))
    assert _run(structure, f, None) == []


@pytest.mark.parametrize(
    ("from_", "display"),
    [("", ""), ("convite@amexblackid835009", "Bradesco"), ("", "Facebook")],
)
def test_from_malformed_fires_without_a_usable_address(from_: str, display: str) -> None:
    f = features(from_, display=display)
    assert rules_of(_run(structure, f, None)) == {"FROM_MALFORMED"}


def test_from_malformed_silent_for_an_ordinary_address() -> None:
    # Near miss: a plain address at a dotted domain, however odd its local part.
    assert _run(structure, features("x.y+tag@mail.example.org"), None) == []


def test_limit_exceeded_is_a_finding() -> None:
    f = replace(features(), limit_hits=("max_parts",))
    assert rules_of(_run(structure, f, None)) == {"LIMIT_EXCEEDED"}


# --------------------------------------------------------------------- qr


def test_qr_code_link_fires_and_names_where_the_code_was() -> None:
    url = "https://amaz0n-verify.top/login"
    f = features(
        "billing@docs-mailer.example",
        display="Amazon",
        links=(link(url, where="qr"),),
        qr_codes=(QrCode(url, "QRCode", "invoice.pdf, page 1"),),
    )
    found = _run(qr, f, claim())
    assert rules_of(found) == {"QR_CODE_LINK"}
    assert found[0].evidence == (f"QR code in invoice.pdf, page 1 → {url}",)
    assert found[0].factor == 1.0  # the code is the only way to act: the quishing pattern


def test_qr_code_link_silent_for_the_brands_own_page_and_for_text_codes() -> None:
    # Near misses: Amazon's own app link in Amazon's code; a code holding a Wi-Fi login.
    own = "https://www.amazon.com/app"
    f = features(
        "ship@amazon.com",
        links=(link(own, where="qr"),),
        qr_codes=(
            QrCode(own, "QRCode", "image app.png"),
            QrCode("WIFI:S:Guest;T:WPA;P:secret;;", "QRCode", "image wifi.png"),
        ),
    )
    assert _run(qr, f, claim()) == []


def test_qr_code_link_beside_ordinary_links_counts_less() -> None:
    url = "https://tickets.example/t/123"
    f = features(
        links=(link("https://events.example/"), link(url, where="qr")),
        qr_codes=(QrCode(url, "QRCode", "ticket.pdf, page 1"),),
    )
    assert [x.factor for x in _run(qr, f, None)] == [0.6]


# --------------------------------------------------------------------- marketplace


def _market_ctx() -> object:
    from filters.marketplace import Channel, MarketplaceProfile, Phrase, Relay

    profile = MarketplaceProfile(
        enabled=True,
        relays=(Relay("amazon", "Amazon messaging", "amazon", ("marketplace.amazon.com",)),),
        channels=(Channel("whatsapp", "WhatsApp", ("whatsapp",), ("wa.me",)),),
        phrases=tuple(
            Phrase(text, cat, "en")
            for cat, text in [
                ("visit", "visit our website"),
                ("coupon", "use code"),
                ("elsewhere", "on our website"),
                ("review", "review"),
                ("positive", "5-star"),
                ("reward", "gift card"),
                ("phone", "call"),
            ]
        ),
    )
    return replace(CTX, marketplace=profile)


_SELLER = "k3x9@marketplace.amazon.com"


@pytest.mark.parametrize(
    ("body", "links", "rule"),
    [
        ("see you", (link("https://gadget-store.example/p"),), "MARKETPLACE_OFFSITE_LINK"),
        ("more at gadget-store.example", (), "MARKETPLACE_OFFSITE_LINK"),
        ("scan the insert", (link("https://gadget-store.example/v", where="qr"),),
         "MARKETPLACE_QR_OFFSITE"),
        ("write to us on whatsapp", (), "MARKETPLACE_CONTACT"),
        ("call +44 7700 900123", (), "MARKETPLACE_CONTACT"),
        ("visit our website for more", (), "MARKETPLACE_VISIT_SITE"),
        ("use code save10 on our website", (), "MARKETPLACE_COUPON"),
        ("a 5-star review earns a gift card.", (), "MARKETPLACE_PAID_REVIEW"),
    ],
)  # fmt: skip
def test_marketplace_rules_fire_on_relayed_steering(
    body: str, links: tuple[Link, ...], rule: str
) -> None:
    f = features(_SELLER, body=body, links=links)
    found = list(marketplace.run(f, None, _market_ctx()))  # type: ignore[arg-type]
    assert rule in rules_of(found)


def test_marketplace_near_misses() -> None:
    ctx = _market_ctx()
    # The platform's own pages, its order numbers, a review asked for without a reward.
    own = features(
        _SELLER,
        body="order 123-4567890-1234567 shipped. a review would help. call if needed.",
        links=(link("https://www.amazon.com/gp/css/order-history"),),
    )
    assert list(marketplace.run(own, None, ctx)) == []  # type: ignore[arg-type]
    # The same steering from a shop's own address is not a relayed seller message.
    shop = features("news@gadget-store.example", body="visit our website on whatsapp")
    assert list(marketplace.run(shop, None, ctx)) == []  # type: ignore[arg-type]


# --------------------------------------------------------------------- meta


def test_every_rule_is_weighted_described_and_tested() -> None:
    from config.loader import load_config

    cfg = load_config()
    here = Path(__file__).parent
    source = (here / "test_checks.py").read_text(encoding="utf-8")
    lookalike_tests = (here / "test_lookalike.py").read_text(encoding="utf-8")
    for check in CHECKS:
        for rule, desc in check.RULES.items():
            assert rule in cfg.rules, f"{rule} has no weight in config/brandgate.toml"
            assert desc and desc[0].isupper(), f"{rule} needs a description"
            assert rule in source or rule in lookalike_tests, f"{rule} has no test"


# --------------------------------------------------------------------- allow_block

ACCESS = AccessLists(
    allow=AccessList(
        addresses=("billing@partner.example",),
        domains=("partner.example",),
        authenticated=("bank-partner.example",),
        link_domains=("intranet.example",),
    ),
    block=AccessList(
        addresses=("boss@ceo-fraud.example",),
        domains=("spam-house.example",),
        authenticated=("bad-esp.example",),
        link_domains=("evil-links.example",),
    ),
)
ACCESS_CTX = replace(CTX, access=ACCESS)


def _lists(f: Features) -> dict[str, tuple[str, ...]]:
    return {x.rule: x.evidence for x in allow_block.run(f, None, ACCESS_CTX)}


def test_allowlist_from_fires_on_address_and_domain_and_names_the_entry() -> None:
    found = _lists(features("news@mail.partner.example"))
    assert found == {
        "ALLOWLIST_FROM": ("From news@mail.partner.example is in listed domain partner.example",)
    }
    assert "ALLOWLIST_FROM" in _lists(
        features("x@y.example", return_path=addr("billing@partner.example"))
    )


def test_allowlist_from_silent_for_a_lookalike_domain() -> None:
    # partner.example.evil.example is not a subdomain of partner.example.
    assert _lists(features("news@partner.example.evil.example")) == {}


def test_allowlist_auth_needs_a_verified_signature() -> None:
    signed = features("x@bank-partner.example", auth=(dkim_pass("mail.bank-partner.example"),))
    assert _lists(signed) == {
        "ALLOWLIST_AUTH": (
            "DKIM signature of mail.bank-partner.example verified; listed bank-partner.example",
        )
    }
    dmarc = features(auth=(AuthResult("mx.example", "dmarc", "pass", "bank-partner.example"),))
    assert "ALLOWLIST_AUTH" in _lists(dmarc)


def test_allowlist_auth_silent_on_an_unverified_signature() -> None:
    # A DKIM-Signature header nobody verified (or one that failed) proves nothing.
    f = features(
        "x@bank-partner.example",
        dkim_domains=("bank-partner.example",),
        auth=(AuthResult("brandgate", "dkim", "fail", "bank-partner.example"),),
    )
    assert _lists(f) == {}


def test_allowlist_link_fires_only_when_every_link_is_listed() -> None:
    inside = features(links=(link("https://wiki.intranet.example/a"), link("intranet.example/b")))
    assert set(_lists(inside)) == {"ALLOWLIST_LINK"}
    # One link elsewhere: the message is not vouched for by its links.
    mixed = features(links=(link("https://wiki.intranet.example/a"), link("https://x.example/")))
    assert _lists(mixed) == {}


def test_blocklist_rules_fire_and_name_the_entry() -> None:
    assert _lists(features("boss@ceo-fraud.example")) == {
        "BLOCKLIST_FROM": ("From boss@ceo-fraud.example is listed",)
    }
    assert set(_lists(features("a@x.spam-house.example"))) == {"BLOCKLIST_FROM"}
    assert set(_lists(features(auth=(dkim_pass("bad-esp.example"),)))) == {"BLOCKLIST_AUTH"}
    found = _lists(features(links=(link("http://go.evil-links.example/x"),)))
    assert found == {
        "BLOCKLIST_LINK": ("links to go.evil-links.example (listed evil-links.example)",)
    }


def test_blocklist_silent_for_neighbours_of_listed_entries() -> None:
    # Another mailbox at the same domain, a domain that only ends alike, a failed signature.
    assert _lists(features("assistant@ceo-fraud.example")) == {}
    assert _lists(features("a@notspam-house.example")) == {}
    failed = features(auth=(AuthResult("brandgate", "dkim", "fail", "bad-esp.example"),))
    assert _lists(failed) == {}
    assert _lists(features(links=(link("http://evil-links.example.org/"),))) == {}
