"""QR and 2-D codes in images and PDFs, end to end, with codes the tests make themselves.

Each way a code reaches a reader (a PNG or JPEG attached, a data: image in the HTML, a cid:
image, a one-page and a three-page PDF) gives a link with where = "qr" that the link checks
see; a brand lure whose only link is in its QR code is flagged. Hostile images and PDFs each
give a limit finding, within the time limit, and the scanner goes on.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from config.loader import ConfigError, load_config
from filters import qr
from filters.engine import Engine
from filters.explain import render
from filters.parse import parse
from filters.types import QrSettings
from tests import qrmail

URL = "https://amaz0n-prime-renewal.top/verify?id=8812"
CFG = load_config()
# Tight bounds for the hostile cases, so that a hang shows at once.
FAST = replace(CFG, qr=replace(CFG.qr, max_seconds=1.0))
# The time any one message may take: decoding's own budget, the grace before the decoder is
# stopped, and room for the scanner and a busy machine. A hang would take minutes.
BOUND = FAST.qr.max_seconds + qr.GRACE_SECONDS + 8.0


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(CFG)


@pytest.fixture(scope="module")
def fast() -> Engine:
    return Engine(FAST)


def qr_links(engine: Engine, raw: bytes) -> list[str]:
    return [link.url for link in engine.analyse(raw).features.links if link.where == "qr"]


def _data_uri_html() -> str:
    data = base64.b64encode(qrmail.png(URL)).decode()
    return f'<p>Scan to renew:</p><img alt="" src="data:image/png;base64,{data}">'


CARRIERS = {
    "png": lambda: qrmail.message(attachments=((qrmail.png(URL), "image", "png", "renew.png"),)),
    "jpeg": lambda: qrmail.message(attachments=((qrmail.jpeg(URL), "image", "jpeg", "renew.jpg"),)),
    "data-uri": lambda: qrmail.message(html=_data_uri_html()),
    "cid": lambda: qrmail.message(
        html='<p>Scan to renew:</p><img src="cid:code1@shop">',
        inline=((qrmail.png(URL), "png", "code1@shop"),),
    ),
    "pdf-1-page": lambda: qrmail.message(
        attachments=((qrmail.pdf_pages([URL]), "application", "pdf", "invoice.pdf"),)
    ),
    "pdf-3-pages": lambda: qrmail.message(
        attachments=((qrmail.pdf_pages([None, None, URL]), "application", "pdf", "invoice.pdf"),)
    ),
    # Mislabelled on purpose: the bytes say PNG, the part says octet-stream.
    "png-as-octet-stream": lambda: qrmail.message(
        attachments=((qrmail.png(URL), "application", "octet-stream", "scan.bin"),)
    ),
}
SOURCES = {
    "png": "image renew.png",
    "jpeg": "image renew.jpg",
    "data-uri": "data: image 1 in the HTML",
    "cid": "image cid:code1@shop",
    "pdf-1-page": "invoice.pdf, page 1",
    "pdf-3-pages": "invoice.pdf, page 3",
    "png-as-octet-stream": "image scan.bin",
}


@pytest.mark.parametrize("carrier", list(CARRIERS))
def test_each_carrier_gives_a_qr_link_with_its_source(engine: Engine, carrier: str) -> None:
    analysis = engine.analyse(CARRIERS[carrier]())
    assert [link.url for link in analysis.features.links if link.where == "qr"] == [URL]
    codes = analysis.features.qr_codes
    assert [(c.text, c.source) for c in codes] == [(URL, SOURCES[carrier])]
    assert codes[0].format == "QRCode"
    evidence = {x.rule: x.evidence for x in analysis.verdict.findings}
    assert evidence["QR_CODE_LINK"] == (f"QR code in {SOURCES[carrier]} → {URL}",)
    assert analysis.features.limit_hits == ()


def test_a_code_drawn_on_a_page_is_read_as_well_as_a_code_in_a_page_image(engine: Engine) -> None:
    # A page that is one image is read from the image; a page with anything else on it (a
    # caption, a code drawn as rectangles) is rendered. Both give the code and its page.
    for pdf in (qrmail.vector_qr_pdf(URL), qrmail.pdf_pages([URL])):
        analysis = engine.analyse(
            qrmail.message(attachments=((pdf, "application", "pdf", "invoice.pdf"),))
        )
        codes = analysis.features.qr_codes
        assert [(c.text, c.source) for c in codes] == [(URL, "invoice.pdf, page 1")]


def _transparent_codes() -> dict[str, bytes]:
    """The code's dark modules opaque black, its light ones black too but transparent: read
    as the colours alone, every one of these is a black square."""
    code = qrmail.qr_image(URL)
    light = code.point(lambda v: 255 if v > 128 else 0)
    indices = Image.frombytes("P", code.size, light.point(lambda v: 1 if v else 0).tobytes())
    indices.putpalette([0, 0, 0, 0, 0, 0, 0, 0, 0])
    rgba = Image.new("RGBA", code.size, (0, 0, 0, 255))
    rgba.putalpha(light.point(lambda v: 255 - v))
    return {
        "png-palette-trns": qrmail.encode(indices, "PNG", transparency=1),
        "gif-transparent-index": qrmail.encode(indices, "GIF", transparency=1),
        "png-rgba": qrmail.encode(rgba, "PNG"),
        "png-grey-alpha": qrmail.encode(rgba.convert("LA"), "PNG"),
        "webp-rgba": qrmail.encode(rgba, "WEBP", lossless=True),
        "png-alpha-per-index": qrmail.encode(indices, "PNG", transparency=bytes([255, 0, 9])),
    }


def test_transparent_pixels_are_read_as_white_whatever_their_colour(engine: Engine) -> None:
    for name, data in _transparent_codes().items():
        colours = Image.open(io.BytesIO(data))
        colours.info.pop("transparency", None)
        assert colours.convert("RGB").getextrema() == ((0, 0),) * 3, name  # black all over
        raw = qrmail.message(attachments=((data, "image", "png", "code.png"),))
        assert qr_links(engine, raw) == [URL], name


def test_a_palette_with_alpha_is_laid_on_white() -> None:
    from filters.qr_worker import Decoder

    image = Image.frombytes("P", (2, 1), bytes([0, 1]))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0], "RGBA")  # opaque black, transparent black
    decoder = Decoder({k: getattr(CFG.qr, k) for k in qr._SETTING_KEYS}, time.monotonic())
    assert decoder.scaled(image).tobytes() == bytes([0, 255])


def test_other_2d_codes_are_read_too(engine: Engine) -> None:
    import zxingcpp

    for fmt in (zxingcpp.BarcodeFormat.DataMatrix, zxingcpp.BarcodeFormat.Aztec):
        image = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(URL, fmt), scale=6)
        from PIL import Image

        pil = Image.frombytes("L", (image.shape[1], image.shape[0]), bytes(image))
        border = Image.new("L", (pil.width + 60, pil.height + 60), 255)
        border.paste(pil, (30, 30))
        raw = qrmail.message(attachments=((qrmail.encode(border, "PNG"), "image", "png", "c.png"),))
        assert qr_links(engine, raw) == [URL], fmt


def test_a_brand_lure_carried_only_by_its_qr_code_is_flagged(engine: Engine) -> None:
    raw = qrmail.message(
        from_='"Membership Services" <documents@mailer-docs.example>',
        subject="Your Amazon Prime membership document",
        text="Hello,\nyour Amazon Prime membership document is attached. Scan the code with "
        "your phone to renew.\nThank you",
        attachments=((qrmail.pdf_pages([URL]), "application", "pdf", "Prime-membership.pdf"),),
    )
    off = Engine(replace(CFG, qr=replace(CFG.qr, enabled=False))).scan(raw)
    verdict = engine.scan(raw)
    # Without the code there is no link to judge: a brand named in passing, nothing more.
    assert off.verdict == "pass"
    assert not [r for r in off.rules if r.startswith(("LINK_", "BRAND_LINK"))]
    assert verdict.verdict != "pass" and verdict.score > off.score
    assert {"BRAND_LINK_DIVERSION", "QR_CODE_LINK", "LINK_SUSPICIOUS_TLD"} <= set(verdict.rules)
    text = render(verdict)
    assert f"QR code in Prime-membership.pdf, page 1 → {URL}" in text
    assert "links go to amaz0n-prime-renewal.top" in text


def test_judging_while_the_decoder_works_gives_the_verdict_of_judging_after(
    engine: Engine,
) -> None:
    """The engine judges the message while the decoder works, and judges again only when a
    code or a limit comes back: either way the verdict is the one the codes make."""
    blank = qrmail.encode(Image.new("RGB", (400, 300), "white"), "PNG")
    plain = qrmail.message(
        from_='"Membership Services" <documents@mailer-docs.example>',
        subject="Your Amazon Prime membership",
        text="Your Amazon Prime membership renews soon: https://amaz0n-prime-renewal.top/r",
        attachments=((blank, "image", "png", "flyer.png"),),
    )
    coded = qrmail.message(attachments=((qrmail.png(URL), "image", "png", "renew.png"),))
    off = Engine(replace(CFG, qr=replace(CFG.qr, enabled=False)))
    for raw in (plain, coded):
        qr.clear_cache()  # the decoder must really be at work, not the cache answering
        pending = qr.submit(parse(raw, CFG.limits, CFG.qr), CFG.qr)
        assert pending.waiting
        pending.result()
        qr.clear_cache()
        verdict = engine.scan(raw).to_dict()
        expected = off.scan(raw).to_dict()
        if raw is coded:
            assert URL in qr_links(engine, raw)
            assert verdict != expected  # the code's link was judged
        else:
            assert verdict == expected


def test_qr_decoding_off_keeps_no_payloads() -> None:
    raw = CARRIERS["pdf-1-page"]()
    assert parse(raw, CFG.limits).payloads == ()
    assert parse(raw, CFG.limits, QrSettings(enabled=False)).payloads == ()
    assert [p.name for p in parse(raw, CFG.limits, CFG.qr).payloads] == ["invoice.pdf"]


def test_a_code_without_a_web_address_is_no_link(engine: Engine) -> None:
    wifi = "WIFI:S:Guest;T:WPA;P:hunter22;;"
    raw = qrmail.message(attachments=((qrmail.png(wifi), "image", "png", "wifi.png"),))
    analysis = engine.analyse(raw)
    assert [c.text for c in analysis.features.qr_codes] == [wifi]
    assert qr_links(engine, raw) == []
    assert "QR_CODE_LINK" not in analysis.verdict.rules


def test_data_images_are_found_in_any_case_and_only_as_data_uris() -> None:
    blob = base64.b64encode(qrmail.png(URL)).decode()
    found, cut = qr.html_images((f'<img src="DATA:Image/PNG;Base64,{blob}">',), 5, 10**7)
    assert [p.name for p in found] == ["data: image 1 in the HTML"] and not cut
    # The same bytes behind another scheme are no image a mail client shows.
    assert qr.html_images((f'<img src="blob:image/png;base64,{blob}">',), 5, 10**7) == ([], False)


def test_code_urls_reads_vcards_and_plain_urls() -> None:
    assert qr.code_urls(" https://x.example/a ") == ["https://x.example/a"]
    card = "BEGIN:VCARD\nFN:Shop\nURL:https://shop.example/c\nEND:VCARD"
    assert qr.code_urls(card) == ["https://shop.example/c"]
    assert qr.code_urls("MEBKM:TITLE:x;URL:http\\://a.example/;;") == []  # escaped: no URL
    assert qr.code_urls("just text") == []


# --------------------------------------------------------------------------- hostile inputs

HOSTILE = {
    "truncated-png": (
        lambda: (qrmail.png(URL)[:300], "image", "png", "t.png"),
        "qr.unreadable",
    ),
    "decompression-bomb": (
        lambda: (qrmail.huge_png(30_000, 30_000), "image", "png", "bomb.png"),
        "qr.max_image_pixels",
    ),
    "20000x20000-jpeg": (
        lambda: (qrmail.resized_jpeg(20_000, 20_000), "image", "jpeg", "big.jpg"),
        "qr.max_image_pixels",
    ),
    "10000-page-pdf": (
        lambda: (qrmail.many_pages(10_000), "application", "pdf", "catalogue.pdf"),
        "qr.max_pdf_pages",
    ),
    "corrupt-pdf": (
        lambda: (qrmail.pdf_pages([URL])[:3000], "application", "pdf", "bad.pdf"),
        "qr.unreadable",
    ),
    "pdf-without-xref": (
        lambda: (qrmail.raw_pdf([b"<< /Type /Catalog /Pages 2 0 R >>"], xref=False), "application",
                 "pdf", "x.pdf"),
        "qr.unreadable",
    ),
    "pdf-image-bomb": (
        lambda: (qrmail.pdf_image_bomb(30_000), "application", "pdf", "bomb.pdf"),
        "qr.max_image_pixels",
    ),
    "nested-forms-pdf": (
        lambda: (qrmail.nested_forms(8), "application", "pdf", "forms.pdf"),
        "qr.max_seconds",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_payloads_give_a_limit_finding_in_time(fast: Engine, case: str) -> None:
    make, hit = HOSTILE[case]
    raw = qrmail.message(attachments=(make(),))
    start = time.monotonic()
    analysis = fast.analyse(raw)
    took = time.monotonic() - start
    assert hit in analysis.features.limit_hits, analysis.features.limit_hits
    assert "LIMIT_EXCEEDED" in analysis.verdict.rules
    assert took < BOUND, f"{case}: {took:.1f} s"
    # The scanner survives, and so does decoding for the next message.
    assert qr_links(fast, CARRIERS["png"]()) == [URL]


def test_many_images_and_pages_are_capped(fast: Engine) -> None:
    images = tuple(
        (qrmail.png(f"https://x{i}.example/"), "image", "png", f"{i}.png") for i in range(25)
    )
    analysis = fast.analyse(qrmail.message(attachments=images))
    assert len(analysis.features.qr_codes) == FAST.qr.max_images
    assert "qr.max_images" in analysis.features.limit_hits
    pdfs = tuple(
        (qrmail.pdf_pages([None, None]), "application", "pdf", f"{i}.pdf") for i in range(3)
    )
    assert "qr.max_pdf_pages" in fast.analyse(qrmail.message(attachments=pdfs)).features.limit_hits


def test_payload_bytes_are_capped() -> None:
    images = [qrmail.png(f"https://{i}.example/") for i in range(4)]
    cap = len(images[0]) + len(images[1]) + 10
    raw = qrmail.message(attachments=tuple((d, "image", "png", "a.png") for d in images))
    parsed = parse(raw, CFG.limits, replace(CFG.qr, max_bytes=cap))
    assert len(parsed.payloads) == 2
    assert "qr.max_bytes" in parsed.limit_hits


def test_a_dead_decoder_is_a_finding_and_is_replaced(engine: Engine) -> None:
    assert qr_links(engine, CARRIERS["png"]()) == [URL]
    proc = qr._PROCESS.proc
    assert proc is not None
    proc.kill()
    proc.wait()
    qr.clear_cache()
    analysis = engine.analyse(CARRIERS["jpeg"]())
    # The dead process is noticed before sending, so this message is decoded by a new one.
    assert [c.text for c in analysis.features.qr_codes] == [URL]
    assert qr._PROCESS.proc is not None and qr._PROCESS.proc.pid != proc.pid


def test_qr_settings_are_validated_all_at_once(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "brandgate.toml").write_text(
        '[qr]\nenabled = 1\nmax_images = 0\nmax_seconds = "2"\nscan_pixels = 99999999\n'
        "max_imgaes = 3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(root)
    text = str(err.value)
    for key in ("qr.enabled", "qr.max_images", "qr.max_seconds", "qr.scan_pixels", "qr.max_imgaes"):
        assert key in text, key
    assert 'did you mean "max_images"' in text


# --------------------------------------------------------------------------- property tests


def _mutate(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in cuts:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


_SEEDS = {
    "png": qrmail.png(URL),
    "jpeg": qrmail.jpeg(URL),
    "pdf": qrmail.pdf_pages([URL]),
    "gif": qrmail.encode(qrmail.qr_image(URL), "GIF"),
    "webp": qrmail.encode(qrmail.qr_image(URL), "WEBP"),
}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(sorted(_SEEDS)),
    cuts=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    keep=st.floats(0.05, 1.0),
)
def test_mutated_images_and_pdfs_never_hang_or_crash(
    fast: Engine, kind: str, cuts: list[tuple[int, int]], keep: float
) -> None:
    seed = _SEEDS[kind]
    data = _mutate(seed[: max(16, int(len(seed) * keep))], cuts)
    raw = qrmail.message(attachments=((data, "application", "octet-stream", f"x.{kind}"),))
    start = time.monotonic()
    verdict = fast.scan(raw)
    assert verdict.status == "ok"
    assert time.monotonic() - start < BOUND


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.binary(min_size=0, max_size=4096),
    st.sampled_from([b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff"]),
)
def test_random_bytes_behind_a_magic_number_are_survived(
    fast: Engine, body: bytes, magic: bytes
) -> None:
    raw = qrmail.message(attachments=((magic + body, "image", "png", "r.png"),))
    assert fast.scan(raw).status == "ok"


def _links_in_child(raw: bytes) -> tuple[list[str], int]:
    engine = Engine(CFG)
    links = [link.url for link in engine.analyse(raw).features.links if link.where == "qr"]
    proc = qr._PROCESS.proc
    return links, proc.pid if proc is not None else 0


def test_a_forked_worker_starts_its_own_decoder(engine: Engine) -> None:
    import multiprocessing

    assert qr_links(engine, CARRIERS["png"]()) == [URL]
    parent = qr._PROCESS.proc
    assert parent is not None
    qr.clear_cache()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        links, child_decoder = pool.apply(_links_in_child, (CARRIERS["pdf-1-page"](),))
    assert links == [URL]
    assert child_decoder not in (0, parent.pid)
    assert qr._PROCESS.proc is parent and parent.poll() is None  # the parent's is untouched
    assert qr_links(engine, CARRIERS["jpeg"]()) == [URL]
