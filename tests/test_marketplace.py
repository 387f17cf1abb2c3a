"""The marketplace profile, end to end: hand-built relayed buyer-seller messages, judged by the
whole engine with the profile on. Steering through each channel, in the languages of the lure
lexicon, must be flagged with the rule that names the channel; the ordinary business of a
seller (order follow-ups, shipping questions, returns through the platform, links to the
platform's own pages) must pass."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from filters.engine import Engine
from tests import qrmail

AMAZON_RELAY = '"GadgetPro - Amazon Marketplace" <k3x9q2m7w1@marketplace.amazon.com>'
AUTH = (
    "mx.market.test; dkim=pass header.d=marketplace.amazon.com; "
    "spf=pass smtp.mailfrom=marketplace.amazon.com; dmarc=pass header.from=marketplace.amazon.com"
)
OVERLAY = """
[engine]
trusted_authserv_ids = ["mx.market.test"]

[marketplace]
enabled = true
"""
# An operator's own relay, known by a header (and its own domain).
RELAY_OVERLAY = """
[relays.sellerchat]
name = "SellerChat relay"
domains = ["relay.sellerchat.example"]
headers = ["X-SellerChat-Conversation: ^conv-[0-9]+$"]
own_domains = ["sellerchat.example"]
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("market")
    (root / "brandgate.toml").write_text(OVERLAY)
    (root / "marketplace.toml").write_text(RELAY_OVERLAY)
    return Engine(load_config(root))


def relayed(
    text: str,
    *,
    from_: str = AMAZON_RELAY,
    subject: str = "Message from seller GadgetPro",
    headers: dict[str, str] | None = None,
    html: str | None = None,
    attachments: tuple[tuple[bytes, str, str, str], ...] = (),
) -> bytes:
    msg = EmailMessage()
    msg["Authentication-Results"] = AUTH
    msg["From"] = from_
    msg["To"] = "buyer-7f3k@marketplace.amazon.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<seller-msg-1@marketplace.amazon.com>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for data, maintype, subtype, filename in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


QR_INSERT = qrmail.pdf_pages(["https://gadgetpro-store.com/vip?src=insert"])
QR_OWN = qrmail.png("https://www.amazon.com/review/create-review?asin=B0TEST1234")

# (case id, message, the rule that must name the channel)
STEERING = [
    ("en-link", relayed("Spare parts are cheaper on our site: https://gadgetpro-store.com/parts"),
     "MARKETPLACE_OFFSITE_LINK"),
    ("en-bare-domain", relayed("Search for gadgetpro-store.com to see our full range."),
     "MARKETPLACE_OFFSITE_LINK"),
    ("en-coupon", relayed("Use code SAVE20 for 20% off on our website next time."),
     "MARKETPLACE_COUPON"),
    ("en-visit", relayed("Please visit our website for more products like this one."),
     "MARKETPLACE_VISIT_SITE"),
    ("en-email", relayed("Email me at gadgetpro.sales@gmail.com and I can do a better price."),
     "MARKETPLACE_CONTACT"),
    ("en-email-spelled", relayed("Write to us: gadgetpro [at] outlook [dot] com"),
     "MARKETPLACE_CONTACT"),
    ("en-phone", relayed("Call us on +1 415 555 0134 and we will sort it out faster."),
     "MARKETPLACE_CONTACT"),
    ("en-whatsapp", relayed("Message us on WhatsApp for quick support with your order."),
     "MARKETPLACE_CONTACT"),
    ("en-telegram-link", relayed("Join our deals channel: https://t.me/gadgetpro_deals"),
     "MARKETPLACE_CONTACT"),
    ("en-instagram-handle", relayed("Follow us on Instagram @gadgetpro_official for new drops."),
     "MARKETPLACE_CONTACT"),
    ("en-paid-review", relayed("Leave a 5-star review and we will send you a $10 gift card."),
     "MARKETPLACE_PAID_REVIEW"),
    ("en-refund-after-review", relayed("Full refund after review, just send us a screenshot."),
     "MARKETPLACE_PAID_REVIEW"),
    ("en-qr-insert", relayed("Your VIP card is attached, scan it for members' prices.",
                             attachments=((QR_INSERT, "application", "pdf", "vip-card.pdf"),)),
     "MARKETPLACE_QR_OFFSITE"),
    ("de-visit-coupon", relayed("Besuchen Sie unseren Shop unter www.technik-direkt.de: mit dem "
                                "Gutscheincode TREU10 erhalten Sie 10 % Rabatt."),
     "MARKETPLACE_VISIT_SITE"),
    ("de-whatsapp-phone", relayed("Für schnellen Support schreiben Sie uns per WhatsApp: "
                                  "0176 12345678"),
     "MARKETPLACE_CONTACT"),
    ("de-paid-review", relayed("Für eine 5-Sterne-Bewertung erstatten wir Ihnen den halben "
                               "Kaufpreis, Rückerstattung per PayPal."),
     "MARKETPLACE_PAID_REVIEW"),
    ("fr-whatsapp", relayed("Contactez-nous sur WhatsApp au +33 6 12 34 56 78 pour un "
                            "remboursement rapide."),
     "MARKETPLACE_CONTACT"),
    ("fr-paid-review", relayed("Laissez un avis 5 étoiles et nous vous offrons une carte cadeau "
                               "de 15 €."),
     "MARKETPLACE_PAID_REVIEW"),
    ("es-visit-coupon", relayed("Visite nuestra tienda online en www.tiendasol.es y use el "
                                "código de descuento SOL15."),
     "MARKETPLACE_COUPON"),
    ("es-telegram-handle", relayed("Escríbenos por Telegram: @tiendasol_oficial"),
     "MARKETPLACE_CONTACT"),
    ("pt-whatsapp", relayed("Chama no WhatsApp (11) 98765-4321 que a gente resolve rapidinho."),
     "MARKETPLACE_CONTACT"),
    ("pt-paid-review", relayed("Avaliação 5 estrelas = reembolso de R$ 20 via Pix."),
     "MARKETPLACE_PAID_REVIEW"),
    ("nl-visit", relayed("Bezoek onze webshop voor meer producten met korting."),
     "MARKETPLACE_VISIT_SITE"),
    ("it-site-coupon", relayed("Visita il nostro sito www.casabella-shop.it: con il codice "
                               "sconto CASA10 risparmi il 10%."),
     "MARKETPLACE_OFFSITE_LINK"),
    ("pl-phone", relayed("Napisz do nas na WhatsApp albo zadzwoń: +48 601 234 567."),
     "MARKETPLACE_CONTACT"),
    ("zh-wechat", relayed("有任何问题请加微信 gadget888，我们给您优惠。"), "MARKETPLACE_CONTACT"),
    ("zh-paid-review", relayed("五星好评返现10美元，截图发给我们即可。"),
     "MARKETPLACE_PAID_REVIEW"),
    ("ja-line", relayed("LINE ID: gadget_jp までご連絡ください。"), "MARKETPLACE_CONTACT"),
    ("ja-paid-review", relayed("星5レビューでギフト券をプレゼント！"), "MARKETPLACE_PAID_REVIEW"),
    ("header-relay-link", relayed(
        "Our own shop has it for less: https://bargain-gadgets.example/item/77",
        from_='"Bargain Gadgets" <seller-88@mailer.example>',
        headers={"X-SellerChat-Conversation": "conv-4411"}),
     "MARKETPLACE_OFFSITE_LINK"),
    ("html-link-to-shop", relayed(
        "Thanks for your order!",
        html='<p>Thanks for your order! <a href="https://gadgetpro-store.com/?ref=amz">See our '
        "other products</a></p>"),
     "MARKETPLACE_OFFSITE_LINK"),
]  # fmt: skip

LEGITIMATE = [
    ("en-order-follow-up", relayed("Thank you for your order 123-4567890-1234567. It was "
                                   "dispatched today and should arrive on Thursday.")),
    ("en-shipping-question", relayed("Could you confirm your delivery address? The carrier "
                                     "could not find house number 12.")),
    ("en-return-via-platform", relayed("To return the item, open Your Orders, choose Return or "
                                       "replace items and print the label. We will refund you "
                                       "as soon as the return arrives.")),
    ("en-platform-link", relayed("You can track it here: https://www.amazon.com/gp/your-account/"
                                 "order-details?orderID=123-4567890-1234567")),
    ("en-neutral-review-ask", relayed("If you have a moment, we would appreciate your honest "
                                      "feedback on Amazon.")),
    ("en-tracking-numbers", relayed("Tracking number 1Z999AA10123456784 for order "
                                    "123-4567890-1234567, shipped with UPS.")),
    ("en-qr-platform-page", relayed("Scan the code to leave a review on Amazon.",
                                    attachments=((QR_OWN, "image", "png", "review.png"),))),
    ("de-shipped", relayed("Vielen Dank für Ihre Bestellung. Das Paket wurde heute an DHL "
                           "übergeben, die Sendungsnummer finden Sie in Ihrem Amazon-Konto.")),
    ("fr-return", relayed("Votre colis a été expédié. Pour un retour, passez par la page Vos "
                          "commandes sur Amazon.")),
    ("es-shipped", relayed("Su pedido ha sido enviado. Si tiene algún problema, responda a "
                           "este mensaje.")),
    ("pt-shipped", relayed("Seu pedido foi enviado. Qualquer dúvida, responda por aqui mesmo.")),
    ("it-review-no-reward", relayed("Se il prodotto le è piaciuto, può lasciare una recensione "
                                    "su Amazon.")),
    ("nl-delay", relayed("Door drukte bij de vervoerder komt uw pakket een dag later aan.")),
    ("pl-shipped", relayed("Dziękujemy za zamówienie, paczka została wysłana.")),
    ("zh-shipped", relayed("您好，您的订单已发货，预计3-5天送达。")),
    ("ja-shipped", relayed("ご注文ありがとうございます。商品は本日発送いたしました。")),
    ("en-sloppy-typing", relayed("Sorry for the delay, it should arrive.It's on the way, see "
                                 "readme.md in the box for setup.")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "raw", "rule"), STEERING, ids=[c[0] for c in STEERING])
def test_steering_is_flagged_and_names_its_channel(
    engine: Engine, case: str, raw: bytes, rule: str
) -> None:
    verdict = engine.scan(raw)
    assert rule in verdict.rules, (case, verdict.rules)
    assert verdict.verdict != "pass", (case, verdict.score, verdict.rules)
    finding = next(x for x in verdict.findings if x.rule == rule)
    assert finding.evidence and finding.evidence[-1].startswith("relayed by ")


@pytest.mark.parametrize(("case", "raw"), LEGITIMATE, ids=[c[0] for c in LEGITIMATE])
def test_legitimate_seller_messages_pass(engine: Engine, case: str, raw: bytes) -> None:
    verdict = engine.scan(raw)
    assert not [r for r in verdict.rules if r.startswith("MARKETPLACE_")], (case, verdict.rules)
    assert verdict.verdict == "pass", (case, verdict.score, verdict.rules)


def test_there_are_thirty_cases_and_every_language_of_the_lexicon() -> None:
    assert len(STEERING) + len(LEGITIMATE) >= 30
    langs = {case.split("-")[0] for case, *_ in [*STEERING, *LEGITIMATE]}
    assert {"en", "de", "fr", "es", "pt", "nl", "it", "pl", "zh", "ja"} <= langs


def test_evidence_names_the_channel(engine: Engine) -> None:
    ev = {c: engine.scan(raw) for c, raw, _ in STEERING}

    def evidence(case: str, rule: str) -> str:
        return " ".join(next(x for x in ev[case].findings if x.rule == rule).evidence)

    assert "WhatsApp" in evidence("en-whatsapp", "MARKETPLACE_CONTACT")
    assert "phone number +1 415 555 0134" in evidence("en-phone", "MARKETPLACE_CONTACT")
    assert "gadgetpro.sales@gmail.com" in evidence("en-email", "MARKETPLACE_CONTACT")
    assert "Telegram link t.me" in evidence("en-telegram-link", "MARKETPLACE_CONTACT")
    assert "@gadgetpro_official" in evidence("en-instagram-handle", "MARKETPLACE_CONTACT")
    assert "WeChat" in evidence("zh-wechat", "MARKETPLACE_CONTACT")
    assert "LINE" in evidence("ja-line", "MARKETPLACE_CONTACT")
    assert "gadgetpro-store.com" in evidence("en-bare-domain", "MARKETPLACE_OFFSITE_LINK")
    qr = evidence("en-qr-insert", "MARKETPLACE_QR_OFFSITE")
    assert "vip-card.pdf, page 1 → https://gadgetpro-store.com/vip" in qr
    assert "SellerChat relay" in evidence("header-relay-link", "MARKETPLACE_OFFSITE_LINK")


def test_the_relays_authentication_does_not_excuse_the_seller(engine: Engine) -> None:
    verdict = engine.scan(relayed("Message us on WhatsApp for quick support."))
    assert "BRAND_AUTHENTICATED" not in verdict.rules  # the platform's, not the seller's


def test_unrelayed_mail_and_the_profile_off_are_not_judged(engine: Engine) -> None:
    shop = relayed("Please visit our website: https://gadgetpro-store.com",
                   from_="GadgetPro <news@gadgetpro-store.com>")  # fmt: skip
    assert not [r for r in engine.scan(shop).rules if r.startswith("MARKETPLACE_")]
    off = Engine(load_config())  # shipped: the profile is off
    steering = STEERING[0][1]
    assert not [r for r in off.scan(steering).rules if r.startswith("MARKETPLACE_")]


def test_overlays_extend_and_errors_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "brandgate.toml").write_text(
        '[marketplace]\nenabled = "yes"\nrelays = ["amazom"]\nbogus = 1\n'
    )
    (tmp_path / "marketplace.toml").write_text(
        '[relays.amazon]\nown_domains = ["amazon-seller-cdn.example"]\nbrnad = "x"\n'
        '[relays.broken]\ndomains = ["not a domain"]\norder_patterns = ["(unclosed"]\n'
        '[phrases.en]\nvisit = ["see our own webshop"]\nnonsense = ["x"]\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    text = str(err.value)
    for key in (
        "marketplace.enabled",
        "marketplace.relays",
        "marketplace.bogus",
        "relays.amazon.brnad",
        "relays.broken.domains",
        "relays.broken.order_patterns",
        "phrases.en.nonsense",
    ):
        assert key in text, key
    assert 'did you mean "amazon"' in text
    assert "marketplace.toml" in text and "brandgate.toml" in text


def test_an_overlay_adds_phrases_and_own_domains(tmp_path: Path) -> None:
    (tmp_path / "brandgate.toml").write_text(OVERLAY)
    (tmp_path / "marketplace.toml").write_text(
        '[relays.amazon]\nown_domains = ["amazon-seller-cdn.example"]\n'
        '[phrases.en]\nvisit = ["see our own webshop"]\n'
    )
    cfg = load_config(tmp_path)
    amazon = next(r for r in cfg.marketplace.relays if r.key == "amazon")
    assert amazon.own_domains == ("amazon-seller-cdn.example",)
    assert "marketplace.amazon.de" in amazon.domains  # shipped entries kept
    engine = Engine(cfg)
    assert "MARKETPLACE_VISIT_SITE" in engine.scan(relayed("Please see our own webshop.")).rules
    own = relayed("Manual: https://amazon-seller-cdn.example/manual.pdf")
    assert "MARKETPLACE_OFFSITE_LINK" not in engine.scan(own).rules


def test_check_config_names_an_unknown_discounted_rule(tmp_path: Path) -> None:
    from config.loader import Problems
    from gateway.cli.explain import check_rules

    (tmp_path / "brandgate.toml").write_text(
        '[marketplace]\ndiscount_rules = ["BRAND_AUTHENTICATD"]\n'
    )
    problems = Problems()
    check_rules(load_config(tmp_path), problems)
    text = " ".join(str(e) for e in problems.errors)
    assert "marketplace.discount_rules: no such rule BRAND_AUTHENTICATD" in text
    assert 'did you mean "BRAND_AUTHENTICATED"' in text
