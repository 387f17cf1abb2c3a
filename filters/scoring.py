"""Findings -> score -> verdict. Weights, group caps and thresholds all come from config."""

from __future__ import annotations

from collections import defaultdict

from config.loader import Config
from filters.checks import RULE_DESCRIPTIONS
from filters.types import Finding, ScoredFinding


def score(
    findings: tuple[Finding, ...], cfg: Config, claimed: bool = True
) -> tuple[float, tuple[ScoredFinding, ...]]:
    """Sum of factor x weight, with each group's positive total capped at the group's cap.

    A capped group scales its findings down proportionally, so that every finding still shows
    the share it really contributed. Without a brand claim, positive scores outside the
    exempt groups are scaled by `scoring.unclaimed_factor`: on their own, shorteners, lure
    words and odd links are the everyday stuff of newsletters, not brand misuse."""
    raw: list[tuple[Finding, str, float, float, float]] = []
    for finding in findings:
        rw = cfg.rules.get(finding.rule)
        if rw is None:  # a rule without a weight is a config error caught by check-config
            continue
        s = finding.factor * rw.weight
        unclaimed = 1.0
        if not claimed and s > 0 and rw.group not in cfg.scoring.unclaimed_exempt:
            unclaimed = cfg.scoring.unclaimed_factor
            s *= unclaimed
        raw.append((finding, rw.group, s, rw.weight, unclaimed))
    totals: dict[str, float] = defaultdict(float)
    for _, group, s, _w, _u in raw:
        if s > 0:
            totals[group] += s
    scale = {
        g: (cfg.groups[g] / t if cfg.groups.get(g) is not None and t > cfg.groups[g] else 1.0)
        for g, t in totals.items()
    }
    scored = tuple(
        ScoredFinding(
            rule=f.rule,
            group=group,
            score=round(s * scale.get(group, 1.0) if s > 0 else s, 2),
            evidence=f.evidence,
            description=RULE_DESCRIPTIONS.get(f.rule, f.rule),
            factor=f.factor,
            weight=weight,
            unclaimed=unclaimed,
            capped=scale.get(group, 1.0) if s > 0 else 1.0,
        )
        for f, group, s, weight, unclaimed in raw
        if s != 0
    )
    ordered = tuple(sorted(scored, key=lambda x: -abs(x.score)))
    return round(sum(x.score for x in ordered), 2), ordered


def decide(total: float, thresholds: dict[str, float]) -> str:
    verdict = "pass"
    for name in ("tag", "quarantine", "reject"):
        if total >= thresholds[name]:
            verdict = name
    return verdict
