"""One human sentence per verdict, and the longer text of `brandgate explain`."""

from __future__ import annotations

from filters.claim import PLACE_NAMES
from filters.types import BrandClaim, Features, ScoredFinding, Verdict


def _foreign_hosts(findings: tuple[ScoredFinding, ...]) -> str | None:
    for f in findings:
        if f.rule == "BRAND_LINK_DIVERSION" and f.evidence:
            text = f.evidence[0]
            return text.split("links go to ", 1)[1] if "links go to " in text else None
    return None


def summarise(
    verdict: str,
    f: Features,
    claim: BrandClaim | None,
    findings: tuple[ScoredFinding, ...],
) -> str:
    """E.g. "Claims to be Amazon in the display name; sent from gmail.com; links go to
    best-deals-outlet.shop." Kept to one sentence: it goes into headers and logs."""
    parts: list[str] = []
    rules = {x.rule for x in findings}
    sender = f.from_addr.domain if f.from_addr and f.from_addr.domain else "an unknown sender"
    if claim is not None:
        where = " and ".join(PLACE_NAMES.get(w, w) for w in claim.where[:2])
        parts.append(f"Claims to be {claim.name} in {where}")
        if "BRAND_AUTHENTICATED" in rules:
            parts.append(f"authenticated as {claim.name}")
        else:
            parts.append(f"sent from {sender}")
        hosts = _foreign_hosts(findings)
        if hosts:
            parts.append(f"links go to {hosts}")
    elif findings:
        parts.append(f"No brand claimed; sent from {sender}")
    else:
        parts.append(f"No brand claimed and nothing suspicious; sent from {sender}")
    # The sentence already says who claims what and where the links go; add the strongest
    # remaining evidence in the checks' own words.
    others = [x for x in findings if x.rule not in _SAID and x.score > 0 and x.evidence]
    parts.extend(x.evidence[0] for x in others[:2])
    return "; ".join(parts) + "."


_SAID = frozenset({"BRAND_SENDER_UNVERIFIED", "BRAND_FREEMAIL_SENDER", "BRAND_LINK_DIVERSION"})


def how_scored(x: ScoredFinding) -> str:
    """ "factor 0.50 x weight 4.00 = 2.00; group links capped: x0.75 -> 1.50", for tuning."""
    out = f"factor {x.factor:.2f} × weight {x.weight:+.2f}"
    value = x.factor * x.weight
    if x.unclaimed != 1.0:
        out += f" × {x.unclaimed:.2f} (no brand claimed)"
        value *= x.unclaimed
    out += f" = {value:+.2f}"
    if x.capped != 1.0:
        out += f"; group {x.group} over its cap: × {x.capped:.2f} -> {x.score:+.2f}"
    return out


def render(v: Verdict, source: str | None = None) -> str:
    """The multi-line explanation printed by `brandgate explain`."""
    lines = []
    if source:
        lines.append(f"Message: {source}")
    if v.brand:
        lines.append(
            f"Claim: {v.brand.name} ({v.brand.brand}) in {', '.join(v.brand.where)}; "
            f"matched {', '.join(v.brand.matched)}; strength {v.brand.strength:.2f}"
        )
    else:
        lines.append("Claim: none")
    lines.append("Findings:")
    if not v.findings:
        lines.append("  (none)")
    for x in v.findings:
        lines.append(f"  {x.score:+6.2f}  {x.rule}  [{x.group}]  {x.description}")
        lines.append(f"           = {how_scored(x)}")
        for ev in x.evidence:
            lines.append(f"           - {ev}")
    lines.append(f"Score: {v.score:.2f}")
    lines.append(
        f"Verdict: {v.verdict.upper()}" + (f" (status {v.status})" if v.status != "ok" else "")
    )
    lines.append(f"Summary: {v.summary}")
    return "\n".join(lines)
