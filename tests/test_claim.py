"""The brand claim: where a message speaks *as* a brand, robust to disguise.

A mention is not a claim."""

from __future__ import annotations

import pytest

from filters.claim import find_claim
from filters.registry import Lexicon
from filters.text import words_skeleton
from tests.factories import CTX, LEXICON, addr, features, link

# The claim cues the shipped config/claim_cues.toml provides, reduced to what these cases need.
CUES = Lexicon(
    LEXICON.terms,
    cues_before=frozenset({"your", "dear", "seu", "sua"}),
    cues_after=frozenset({"account", "team", "security", "service", "order", "card", "conta"}),
    generic_author=frozenset(
        {"customer", "service", "support", "team", "security", "online", "no", "reply"}
    ),
    lure_words=frozenset({"gift", "cash", "verify"}),
)
CTX_CUES = type(CTX)(registry=CTX.registry, lists=CTX.lists, lexicon=CUES, limits=CTX.limits)


def claim_of(**kw: object) -> tuple[str | None, tuple[str, ...]]:
    c = find_claim(features(**kw), CTX_CUES)  # type: ignore[arg-type]
    return (c.brand, c.where) if c else (None, ())


@pytest.mark.parametrize(
    "display",
    [
        "Amazon",
        "Amazon Rewards Team",
        "PаyPal".replace("a", "a"),  # plain, for the table's sake
        "ＡＭＡＺＯＮ",  # full-width letters
        "Am\u200bazon",  # zero-width space inside the name
        "Amaz0n Service",  # digit for a letter
        "A-m-a-z-o-n",  # letters split by punctuation
        "Amazonn",  # one letter too many
    ],
)
def test_display_name_claims_survive_disguise(display: str) -> None:
    brand, where = claim_of(from_="x@deals-outlet.net", display=display)
    assert brand in ("amazon", "paypal")
    assert "display-name" in where


def test_cyrillic_letters_fold_to_the_brand() -> None:
    assert claim_of(from_="x@pp-help.net", display="Pаypаl Security")[0] == "paypal"


def test_from_local_part_claims() -> None:
    assert claim_of(from_="paypal.support.team@hotmail.com", display="")[1] == ("from-local-part",)


def test_brand_domain_is_a_claim_and_lookalike_domain_too() -> None:
    assert claim_of(from_="ship@amazon.com", display="Shipping")[1] == ("from-domain",)


def test_subject_claim_needs_a_cue_or_a_vague_author() -> None:
    # "Your PayPal account" speaks as PayPal; a named author writing about PayPal does not.
    assert claim_of(display="Customer Service", subject="PayPal: unusual sign-in")[0] == "paypal"
    assert claim_of(display="Jane Doe", subject="Your PayPal account is limited")[0] == "paypal"
    assert claim_of(display="Jane Doe", subject="PayPal shares fell 5% today")[0] is None


def test_cjk_name_in_subject() -> None:
    assert claim_of(display="客服", subject="您的亚马逊账户已被锁定")[0] == "amazon"


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        (
            {"from_": "news@nordicknits.se", "display": "Nordic Knits",
             "subject": "Now also on Amazon"},
            "a shop listing the marketplaces it sells on",
        ),
        (
            {"from_": "jane@gmail.com", "display": "Jane Doe", "body": "look https://www.amazon.com/dp/1"},
            "a friend's link to a brand's site",
        ),
        (
            {"from_": "digest@technews.example.org", "display": "TechNews Daily",
             "subject": "PayPal and Amazon earnings"},
            "a news digest about brands",
        ),
        ({"from_": "tim@example.org", "display": "Chase Miller"},
         "a person whose name is a brand word"),
        (
            {"from_": "news@lockergnome.com", "display": "Lockergnome Amazon Digest",
             "subject": "Amazon"},
            "an organisation naming itself, with the brand as its topic",
        ),
    ],
)  # fmt: skip
def test_mentions_are_not_claims(kw: dict[str, str], why: str) -> None:
    assert claim_of(**kw)[0] is None, why


def test_context_name_needs_service_words() -> None:
    # "Chase" alone is a claim of Chase in a display name of service words only.
    assert claim_of(from_="alerts@secure-msg.net", display="Chase Online Security")[0] == "chase"
    assert claim_of(from_="c@example.org", display="Chase Thompson")[0] is None


def test_claim_records_what_matched() -> None:
    c = find_claim(features(from_="x@y-deals.net", display="Amazon.com"), CTX_CUES)
    assert c is not None and c.name == "Amazon" and c.strength == 1.0
    assert words_skeleton("amazon com") in c.matched


def test_generic_display_freemail_sender_without_brand_is_no_claim() -> None:
    assert (
        claim_of(from_="bob@gmail.com", display="Customer Service", reply_to=(addr("b@x.org"),))[0]
        is None
    )


@pytest.mark.parametrize(
    ("from_", "display"),
    [
        ("paypalsecurereview@relay-41.example", "PayPal Secure Review"),  # glued mailbox
        ("cs.dhlglobal-parcel7781@relay-41.example", "DHL Global Parcel"),  # split mailbox
    ],
)
def test_a_mailbox_named_after_the_brand_is_no_person(from_: str, display: str) -> None:
    # The display name is led by the brand and the mailbox spells it: the words beside it
    # ("Secure", "Global") are no person's name, even where the mailbox spells them too.
    brand, where = claim_of(from_=from_, display=display)
    assert brand in ("paypal", "dhl")
    assert "display-name" in where


def test_near_miss_a_person_whose_surname_is_a_brand() -> None:
    # The surname comes last; the mailbox is the person's.
    assert claim_of(from_="mary.paypal@university.example", display="Mary Paypal")[0] is None


def test_a_generic_word_inside_the_senders_domain_is_not_its_organisation() -> None:
    # "care" stands inside customercare-hjh: a word, not the name of the sender.
    assert claim_of(from_="notice@customercare-hjh.example", display="DHL Customer Care")[0] == (
        "dhl"
    )


def test_near_miss_the_sender_naming_its_own_organisation() -> None:
    # "Parcelwatch" is the sender's own label: it writes about DHL.
    assert claim_of(from_="news@parcelwatch.example", display="Parcelwatch DHL Digest")[0] is None


@pytest.mark.parametrize(
    "subject",
    [
        "Claim a gift card for Amazon today",  # instrument, link word, brand
        "Seu cartão presente Amazon chegou",  # Portuguese, the instrument first
        "A gift card for Chase customers",  # an ordinary-word name drawn on too
    ],
)
def test_a_brand_after_its_gift_instrument_is_a_claim(subject: str) -> None:
    brand, where = claim_of(
        from_="promo@newsletter-42.example", display="Weekly Deals", subject=subject
    )
    assert brand in ("amazon", "chase") and where == ("subject",)


@pytest.mark.parametrize(
    "subject", ["Verify Amazon now", "Gift ideas: the Amazon bestsellers", "Chase the sun"]
)
def test_near_miss_a_brand_after_other_words_is_a_mention(subject: str) -> None:
    assert (
        claim_of(from_="promo@newsletter-42.example", display="Weekly Deals", subject=subject)[0]
        is None
    )


def test_a_cjk_name_beside_latin_words_is_a_claim() -> None:
    # The Latin word is an ambiguous name ("Prime") that the CJK words beside it cannot make a
    # claim; the CJK name of the brand is one on its own.
    brand, where = claim_of(from_="notice@relay-88.example", display="Prime（亚马逊会员中心）")
    assert brand == "amazon" and where == ("display-name",)


def test_near_miss_latin_and_cjk_words_without_a_brand_name() -> None:
    assert claim_of(from_="notice@relay-88.example", display="Prime（会员中心）")[0] is None


def test_a_brand_signing_twice_as_its_department_from_a_persons_mailbox() -> None:
    # An invoice scam sent from a hijacked personal mailbox: the person's name is on the
    # envelope, the opening lines sign as the brand's departments.
    body = (
        "Dear customer, an invoice was generated. Questions? Call PayPal Service at 555-0100. "
        "Thank you, PayPal Security Team"
    )
    brand, where = claim_of(from_="zkeller01@school.example", display="Zaydyn Keller", body=body)
    assert brand == "paypal" and where == ("body",)


def test_near_miss_a_person_mentioning_a_brand_once() -> None:
    body = "I phoned PayPal Service about the refund; they were helpful. See you Sunday."
    assert claim_of(from_="zkeller01@school.example", display="Zaydyn Keller", body=body)[0] is None


def test_a_subject_giving_a_brands_goods_away_claims_the_brand() -> None:
    # The author names nobody and the subject hands out a prize in the brand's name.
    subject = "You have been selected for a free PayPal prize"
    brand, where = claim_of(
        from_="promo@newsletter-42.example", display="Weekly Deals", subject=subject
    )
    assert brand == "paypal" and where == ("subject",)


def test_near_miss_a_subject_naming_a_brand_without_a_prize() -> None:
    subject = "PayPal results beat forecasts"
    assert (
        claim_of(from_="promo@newsletter-42.example", display="Weekly Deals", subject=subject)[0]
        is None
    )


def test_a_call_to_action_speaking_as_the_brand_claims_it() -> None:
    # The author names nobody; the button speaks to "your" brand offer and leaves the brand.
    button = link("https://offers-desk-17.example/go", shown="Activate your PayPal reward")
    brand, where = claim_of(
        from_="news@offers-desk-17.example", display="Member Desk", links=(button,)
    )
    assert brand == "paypal" and where == ("link-text",)


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("https://offers-desk-17.example/go", "Shop PayPal deals", "no cue: a mention"),
        ("https://www.paypal.com/myaccount", "Open your PayPal account", "the brand's own site"),
    ],
)
def test_near_miss_a_button_naming_a_brand(url: str, shown: str, why: str) -> None:
    button = link(url, shown=shown)
    found = claim_of(from_="news@offers-desk-17.example", display="Member Desk", links=(button,))
    assert found[0] is None, why


def test_a_display_name_addressing_the_reader_is_no_person() -> None:
    # "Your ... Brief" at a mailbox spelling it: people do not sign with "your", so the
    # brand beside it is a claim, not a surname.
    brand, where = claim_of(
        from_="yourpaypalbrief@larso-doors.example", display="Your PayPal Brief"
    )
    assert brand == "paypal" and "display-name" in where


def test_near_miss_the_same_name_without_your_is_a_person() -> None:
    assert claim_of(from_="jane.brief@larso-doors.example", display="Jane PayPal Brief")[0] is None


def test_an_ordinary_name_signing_as_a_department_beside_one_other_word() -> None:
    # "Chase" alone is an ordinary word; "Chase Support" signs as the bank's department,
    # and one more word of unknown role ("Courtesy") does not make it a person.
    brand, where = claim_of(from_="courtesy@carsforce-88.example", display="Courtesy Chase Support")
    assert brand == "chase" and where == ("display-name",)


@pytest.mark.parametrize(
    "display",
    [
        "Courtesy Chase Garden",  # no service word beside the name
        "Ann Courtesy Chase Support",  # two words of unknown role: a person may sign so
    ],
)
def test_near_miss_an_ordinary_name_among_other_words(display: str) -> None:
    assert claim_of(from_="courtesy@carsforce-88.example", display=display)[0] is None


def test_a_name_of_several_words_written_as_one_claims() -> None:
    # "ChaseBank" for "Chase Bank", as "AlbertHeijn" for "Albert Heijn".
    brand, where = claim_of(
        from_="news@raffle-desk-3.example", display="Win", subject="Your ChaseBank account"
    )
    assert brand == "chase" and where == ("subject",)


def test_near_miss_a_longer_word_that_starts_with_the_joined_name() -> None:
    subject = "Your Chasebanker account"
    assert claim_of(from_="news@raffle-desk-3.example", display="Win", subject=subject)[0] is None


def test_what_replaced_configs_built_does_not_outlive_them() -> None:
    from filters import context as context_mod

    sources = [object() for _ in range(200)]  # stand-ins for registries of 200 reloads
    for source in sources:
        assert context_mod.derived(source, ("test",), lambda: 1) == 1
    assert len(context_mod._memo) <= context_mod._MEMO_ENTRIES
    last = sources[-1]
    assert context_mod.derived(last, ("test",), lambda: 2) == 1  # the config in use: kept
