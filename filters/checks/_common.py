"""Small helpers several checks share: which links are calls to action, who is authenticated."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from filters import auth
from filters.domains import registrable
from filters.lookalike import country_site
from filters.registry import Brand, BrandRegistry, Lists
from filters.types import Features, Link

# Where a link is something the reader is asked to click or scan (images only decorate).
CTA_PLACES = frozenset({"html-a", "html-form", "html-area", "text", "qr"})


def cta_links(f: Features, lists: Lists) -> list[Link]:
    return [
        link
        for link in f.links
        if link.where in CTA_PLACES
        and link.scheme in ("http", "https", "")
        and link.host
        and link.registrable not in lists.ignored_link_hosts
        and link.host not in lists.ignored_link_hosts
    ]


def redirect_target(link: Link) -> str:
    """Registrable domain of the URL a redirect parameter carries, "" when none."""
    if not link.redirect_to:
        return ""
    try:
        host = (urlsplit(link.redirect_to).hostname or "").lower()
    except ValueError:
        return ""
    return registrable(host) if host else ""


def target_domains(link: Link) -> list[str]:
    """The registrable domain a click lands on: the link's own, plus a redirect's target."""
    out = [link.registrable] if link.registrable else []
    target = redirect_target(link)
    if target and target not in out:
        out.append(target)
    return out


def sender_is_brand(f: Features, brand: Brand, reg: BrandRegistry) -> str | None:
    """The brand domain entry the From address is at: one the registry lists, or the brand's
    name under a country suffix (its country site, which no registry lists in full)."""
    if f.from_addr is None or not f.from_addr.domain:
        return None
    entry = reg.may_send(brand, f.from_addr.domain)
    if entry is None:
        site = country_site(f.from_addr.domain, brand.key, reg)
        entry = f"{site}, under a country suffix" if site else None
    return entry


def brand_authenticated(f: Features, brand: Brand, reg: BrandRegistry) -> str | None:
    """Evidence when a trusted result shows the brand itself sent this message, else None.

    Only results we trust count: our own DKIM verification and Authentication-Results from
    configured authserv-ids. An unverified DKIM-Signature header proves nothing."""
    for dom in auth.dkim_pass_domains(f.auth):
        entry = reg.may_send(brand, dom)
        if entry and f.from_addr and auth.aligned(dom, f.from_addr.domain):
            return (
                f"DKIM signature of {dom} verified (aligned with From, {brand.name} domain {entry})"
            )
    dmarc = auth.dmarc_pass_domain(f.auth)
    if dmarc:
        entry = reg.may_send(brand, dmarc)
        if entry:
            return f"DMARC pass for {dmarc} ({brand.name} domain {entry})"
    return None


def auth_failed(f: Features, domain: str) -> str | None:
    """Evidence when a trusted result says mail from `domain` failed authentication."""
    for res in f.auth:
        if res.method == "dmarc" and res.result == "fail" and auth.aligned(res.domain, domain):
            return f"DMARC fail for {res.domain} reported by {res.authserv_id}"
    passed = set(auth.dkim_pass_domains(f.auth))
    for res in f.auth:
        if (
            res.method == "dkim"
            and res.result == "fail"
            and auth.aligned(res.domain, domain)
            and not any(auth.aligned(p, domain) for p in passed)
        ):
            return f"DKIM signature of {res.domain} failed verification ({res.authserv_id})"
    return None


def free_hosted(host: str, lists: Lists) -> str | None:
    """The free-hosting entry (site builder, bucket, form service) serving `host`, if any."""
    labels = host.split(".")
    for i in range(len(labels) - 1):
        suffix = ".".join(labels[i:])
        if suffix in lists.free_hosting:
            return suffix
    return None


def sample(items: Iterable[str], n: int = 3) -> str:
    uniq = list(dict.fromkeys(items))
    more = f" (+{len(uniq) - n} more)" if len(uniq) > n else ""
    return ", ".join(uniq[:n]) + more


def a_or_an(name: str) -> str:
    """ "an Amazon", "a PayPal": the article a brand name takes (by its first letter)."""
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"
