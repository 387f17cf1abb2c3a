"""filters.urls, filters.html and filters.domains: hosts as a browser reads them."""

from __future__ import annotations

import pytest

from filters import domains
from filters.html import analyse_html
from filters.types import Link
from filters.urls import LinkSet, ipv4_host, make_link, text_urls

REDIRECTS = frozenset({"url", "q", "u", "target"})

# --- domains -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.paypal.co.uk", "paypal.co.uk"),
        ("MAIL.Amazon.COM.", "amazon.com"),
        ("paypal.com.secure-login.example.com", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("xn--pypal-4ve.com", "xn--pypal-4ve.com"),
        ("192.168.0.1", "192.168.0.1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("localhost", ""),
        ("a.b.evil.example", "evil.example"),  # TLD unknown to the list: last label
        ("co.uk", ""),
        ("", ""),
    ],
)
def test_registrable(host: str, expected: str) -> None:
    assert domains.registrable(host) == expected


def test_idna_both_ways_never_raise() -> None:
    ascii_host = domains.to_ascii("PаyPal.com")  # Cyrillic "а"
    assert ascii_host.startswith("xn--") and ascii_host.isascii()
    assert domains.to_unicode(ascii_host) == "pаypal.com"
    assert domains.to_ascii("ex\u3002ample\uff0ecom") == "ex.ample.com"
    assert domains.to_unicode("xn--zzzz-.com") == "xn--zzzz-.com"  # invalid punycode kept
    assert domains.to_ascii("a..b\x00") == domains.to_ascii("a..b\x00")  # stable, no error
    assert domains.to_ascii("-" * 300 + "ü.com")


def test_split_and_is_ip() -> None:
    assert domains.split("a.b.paypal.co.uk") == ("a.b", "paypal", "co.uk")
    assert domains.split("10.0.0.1") == ("", "10.0.0.1", "")
    assert domains.split("a.b.evil.example") == ("a.b", "evil", "example")
    assert domains.split("localhost") == ("", "localhost", "")
    assert domains.is_ip("[::1]") and domains.is_ip("10.0.0.1")
    assert not domains.is_ip("paypal.com") and not domains.is_ip("")


def test_suffix_list_is_bundled_not_downloaded() -> None:
    extractor = domains._EXTRACT
    assert tuple(extractor.suffix_list_urls) == ()
    assert domains.registrable("foo.bar.com.br") == "bar.com.br"


# --- make_link -----------------------------------------------------------------------------


def link(url: str, where: str = "html-a", shown: str | None = None) -> Link:
    found = make_link(url, where, shown, redirect_params=REDIRECTS)
    assert found is not None
    return found


def test_plain_https_link() -> None:
    lk = link("https://Login.PayPal.com:443/x?y=1#z", shown="PayPal")
    assert (lk.scheme, lk.host, lk.registrable, lk.shown) == (
        "https",
        "login.paypal.com",
        "paypal.com",
        "PayPal",
    )
    assert not lk.is_ip and not lk.has_userinfo and lk.redirect_to is None


def test_userinfo_trick() -> None:
    lk = link("http://www.paypal.com@evil.example/login")
    assert lk.host == "evil.example" and lk.has_userinfo
    lk = link("http://paypal.com:secure@203.0.113.9/")
    assert lk.host == "203.0.113.9" and lk.is_ip and lk.has_userinfo


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://3232235777/", "192.168.1.1"),
        ("http://0xC0A80101/x", "192.168.1.1"),
        ("http://0300.0250.1.1/", "192.168.1.1"),
        ("http://192.168.257/", "192.168.1.1"),
        ("http://[2001:db8::1]:8080/", "[2001:db8::1]"),
        ("https://198.51.100.7./", "198.51.100.7"),
    ],
)
def test_ip_hosts(url: str, host: str) -> None:
    lk = link(url)
    assert lk.is_ip and lk.host == host
    assert lk.registrable == host.strip("[]")


def test_not_ip_when_not_numeric() -> None:
    assert ipv4_host("1.2.3.com") is None
    assert ipv4_host("08.1.1.1") is None
    assert ipv4_host("256.1.1.1") is None
    assert not link("http://1.2.3.com/").is_ip


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http:\\\\evil.example\\path", "evil.example"),
        ("https:/evil.example/", "evil.example"),
        ("//evil.example/path", "evil.example"),
        ("  http://evil.example/\n", "evil.example"),
        ("ht\ttp://ev\nil.example/", "evil.example"),
        ("http://%65vil.example/", "evil.example"),
        ("http://EVIL.example./", "evil.example"),
        ("http://xn--pypal-4ve.com/", "xn--pypal-4ve.com"),
        ("http://pаypal.com/", "xn--pypal-4ve.com"),
        ("www.evil.example/x", "www.evil.example"),
        ("www.evil.example:8080/x", "www.evil.example"),
    ],
)
def test_browser_style_hosts(url: str, host: str) -> None:
    assert link(url).host == host


def test_host_unicode_for_display() -> None:
    lk = link("http://xn--pypal-4ve.com/")
    assert lk.host_unicode == "pаypal.com"
    assert lk.registrable == "xn--pypal-4ve.com"


def test_scheme_less_www_has_empty_scheme() -> None:
    assert link("www.example.org").scheme == ""


@pytest.mark.parametrize(
    "url", ["mailto:a@b.example", "tel:+123", "cid:part1@x", "#top", "", "  ", "/relative/path"]
)
def test_skipped_urls(url: str) -> None:
    assert make_link(url, "html-a") is None


def test_data_and_javascript_kept_as_opaque() -> None:
    data = link("data:text/html;base64," + "A" * 10_000, "html-a")
    assert (data.scheme, data.host, data.registrable) == ("data", "", "")
    assert len(data.url) <= 256
    js = link("JavaScript:alert(1)")
    assert (js.scheme, js.host) == ("javascript", "")


def test_relative_link_resolved_against_base() -> None:
    lk = make_link("login.php", "html-form", base="http://evil.example/kit/")
    assert (
        lk is not None
        and lk.host == "evil.example"
        and lk.url == "http://evil.example/kit/login.php"
    )


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://www.google.com/url?q=https://evil.example/a&sa=D", "https://evil.example/a"),
        ("https://t.example/r?url=https%3A%2F%2Fevil.example%2Fx", "https://evil.example/x"),
        ("https://t.example/r?u=https%253A%252F%252Fevil.example%252F", "https://evil.example/"),
        (
            "https://a.example/?url=https%3A%2F%2Fb.example%2F%3Fq%3Dhttps%253A%252F%252Fc.example%252F",
            "https://c.example/",
        ),
        ("https://t.example/r?TARGET=//evil.example/", "//evil.example/"),
    ],
)
def test_redirect_targets(url: str, target: str) -> None:
    assert link(url).redirect_to == target


def test_redirect_param_not_a_url_ignored() -> None:
    assert link("https://shop.example/search?q=shoes").redirect_to is None
    no_params = make_link("https://x.example/?url=https://y.example/", "text")
    assert no_params is not None and no_params.redirect_to is None


def test_odd_inputs_do_not_raise() -> None:
    for url in [
        "http://",
        "http://@",
        "http://[",
        "http://[::1",
        "https://:80",
        "x:",
        "http://a b/",
    ]:
        make_link(url, "html-a")


# --- text URLs -----------------------------------------------------------------------------


def test_text_urls_strip_trailing_punctuation() -> None:
    text = "Go to https://evil.example/a. Or (see www.b.example/x_(y)), or <http://c.example/>!"
    assert text_urls(text) == ["https://evil.example/a", "www.b.example/x_(y)", "http://c.example/"]


def test_text_urls_need_a_boundary() -> None:
    assert text_urls("user@www.example.com and xwww.example.com and hxxp://x.example") == []
    assert text_urls("HTTP://LOUD.EXAMPLE/") == ["HTTP://LOUD.EXAMPLE/"]


# --- HTML ----------------------------------------------------------------------------------

PAGE = """<html><head><title>Title words</title><style>p{}</style>
<base href="http://base.example/dir/">
<meta http-equiv="refresh" content="5; URL='http://refresh.example/'"></head>
<body><p>Dear customer,</p><div>Your <b>Pay</b><span>Pal</span> account</div>
<a href="https://evil.example/?a=1&amp;b=2">  https://www.paypal.com/
   login </a>
<a href="https://x.example/"><img src="logo.png" alt="Amazon logo"></a>
<img src="http://img.example/p.gif" title="tracking">
<form action="post.php"><input type="submit" value="Go"></form>
<map><area href="http://area.example/" alt="Area"></map>
<div style="display: NONE">hidden filler <a href="http://hidden.example/">h</a></div>
<span style="font-size:0px">tiny</span><script>var s = "script text";</script>
<table><tr><td>cell1</td><td>cell2</td></tr></table>
</body></html>"""


def test_html_visible_text() -> None:
    text = " ".join(analyse_html(PAGE).text.split())
    assert "Dear customer," in text and "Your PayPal account" in text
    assert "cell1 cell2" in text
    for hidden in ("Title words", "hidden filler", "tiny", "script text", "p{}"):
        assert hidden not in text


def test_html_links_in_document_order() -> None:
    doc = analyse_html(PAGE)
    assert doc.base == "http://base.example/dir/"
    assert doc.links == [
        ("http://refresh.example/", "html-meta", None),
        ("https://evil.example/?a=1&b=2", "html-a", "https://www.paypal.com/ login"),
        ("logo.png", "html-img", "Amazon logo"),
        ("https://x.example/", "html-a", "Amazon logo"),
        ("http://img.example/p.gif", "html-img", "tracking"),
        ("post.php", "html-form", None),
        ("http://area.example/", "html-area", "Area"),
    ]
    assert doc.image_alts == ["Amazon logo", "tracking"]


def test_html_link_text_capped() -> None:
    doc = analyse_html(f'<a href="http://a.example/">{"word " * 200}</a>')
    shown = doc.links[0][2]
    assert shown is not None and len(shown) == 200


def test_html_entities_and_broken_markup() -> None:
    doc = analyse_html('<p>caf&eacute; &#x50;ay&#80;al<a href="http://a.example/?x=1&amp;y=2">go')
    assert "café PayPal" in doc.text
    assert doc.links == [("http://a.example/?x=1&y=2", "html-a", "go")]


@pytest.mark.parametrize(
    "markup", ["", " ", "<!-- only -->", "\x00", "<<<>>>", "<a href=>", "<" * 5000]
)
def test_html_never_raises(markup: str) -> None:
    doc = analyse_html(markup)
    assert isinstance(doc.links, list)


def test_html_link_budget() -> None:
    doc = analyse_html(
        "".join(f'<a href="http://x{i}.example/">l</a>' for i in range(50)), max_links=10
    )
    assert len(doc.links) == 10 and doc.truncated


# --- LinkSet -------------------------------------------------------------------------------


def test_linkset_dedup_and_cap() -> None:
    links = LinkSet(limit=3)
    links.add("http://a.example/", "text")
    links.add("http://a.example/", "text")
    links.add(" http://a.example/ ", "text")  # same URL once cleaned
    links.add("http://a.example/", "html-a", "A")
    links.add("mailto:x@y.example", "html-a")  # not a link: no slot used
    links.add("http://b.example/", "text")
    links.add("http://c.example/", "text")
    assert [(lk.url, lk.where) for lk in links.links] == [
        ("http://a.example/", "text"),
        ("http://a.example/", "html-a"),
        ("http://b.example/", "text"),
    ]
    assert links.capped
