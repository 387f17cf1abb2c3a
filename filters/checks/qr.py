"""Links hidden in QR and other 2-D codes: the reader's phone opens them, and no mail client
or link scanner in front of the reader sees them. Their URLs are also ordinary links
(where = "qr") for every other link check; this check names where each code was."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import target_domains
from filters.context import Context
from filters.qr import code_urls
from filters.types import BrandClaim, Features, Finding

RULES = {
    "QR_CODE_LINK": "A link is carried by a QR or 2-D code in an image or PDF, where only the "
    "reader's phone sees it (quishing)",
}
_SHOWN = 3  # codes named in the evidence


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if not f.qr_codes:
        return
    brand = ctx.registry.brands.get(claim.brand) if claim else None
    found: list[str] = []
    own = 0
    qr_links = {link.url: link for link in f.links if link.where == "qr"}
    for code in f.qr_codes:
        for url in code_urls(code.text):
            link = qr_links.get(url)
            if link is None or not link.host:
                continue
            if brand is not None and all(
                ctx.registry.may_link(brand, d) for d in target_domains(link)
            ):
                own += 1  # the brand's own app or page behind its own code
                continue
            found.append(f"{_name(code.format)} in {code.source} → {url[:200]}")
    if not found:
        return
    # The code as the only way to act is the quishing pattern; beside ordinary links it is
    # more often a ticket, an app download or a payment slip.
    others = any(link.where in ("html-a", "text", "html-area") for link in f.links)
    factor = 0.6 if others or own else 1.0
    more = f" (+{len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
    evidence = (*found[:_SHOWN], *((more.strip(),) if more else ()))
    yield Finding("QR_CODE_LINK", evidence, factor=factor)


def _name(fmt: str) -> str:
    """ "QRCode" -> "QR code", "DataMatrix" -> "Data Matrix code"."""
    if fmt.startswith(("QRCode", "MicroQRCode", "rMQRCode")) or not fmt:
        return "QR code"
    return {"DataMatrix": "Data Matrix code", "Aztec": "Aztec code"}.get(fmt, f"{fmt} code")
