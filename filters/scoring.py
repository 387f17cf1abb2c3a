"""Findings -> score -> verdict. Weights, combinations, group caps and thresholds come from config.

A score is a sum of factor x weight. Where two pieces of evidence mean more together than apart
(a brand claim *and* links that leave the brand), the combination is a finding of its own
(`[combos]` in config), with its own learned weight, rather than a hand-set cap or bonus: the
explanation then shows it like any other rule.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from config.loader import Config
from filters.checks import RULE_DESCRIPTIONS
from filters.types import Finding, ScoredFinding


def combine(
    findings: tuple[Finding, ...], combos: Mapping[str, tuple[str, ...]]
) -> tuple[Finding, ...]:
    """The findings plus one finding per combination whose rules all fired, with the product
    of their factors (each rule counted once, at its strongest)."""
    if not combos or not findings:
        return findings
    best: dict[str, Finding] = {}
    for f in findings:
        if f.rule not in best or f.factor > best[f.rule].factor:
            best[f.rule] = f
    extra = []
    rules = best.keys()
    for name, parts, need in _candidates(combos, rules):
        if rules >= need:
            factor = math.prod(best[p].factor for p in parts)
            evidence = tuple(f"{p}: {best[p].evidence[0]}" for p in parts if best[p].evidence)
            extra.append(Finding(name, evidence, factor=round(factor, 4)))
    return (*findings, *extra)


_Combo = tuple[int, str, tuple[str, ...], frozenset[str]]
_COMBO_INDEX: dict[int, tuple[Mapping[str, tuple[str, ...]], dict[str, list[_Combo]]]] = {}


def _candidates(
    combos: Mapping[str, tuple[str, ...]], rules: Iterable[str]
) -> list[tuple[str, tuple[str, ...], frozenset[str]]]:
    """The combinations that might be complete, those whose first rule fired, in config
    order: one lookup per finding instead of a test of every combination."""
    cached = _COMBO_INDEX.get(id(combos))
    if cached is None or cached[0] is not combos:
        index: dict[str, list[_Combo]] = defaultdict(list)
        for i, (name, parts) in enumerate(combos.items()):
            if parts:
                index[parts[0]].append((i, name, parts, frozenset(parts)))
        if len(_COMBO_INDEX) >= 8:  # config reloads: keep memory bounded
            _COMBO_INDEX.clear()
        cached = _COMBO_INDEX[id(combos)] = (combos, dict(index))
    found = sorted(c for rule in rules for c in cached[1].get(rule, ()))
    return [(name, parts, need) for _, name, parts, need in found]


def describe(rule: str, combos: Mapping[str, tuple[str, ...]]) -> str:
    if rule in combos:
        return "Together: " + " + ".join(combos[rule])
    return RULE_DESCRIPTIONS.get(rule, rule)


def score(
    findings: tuple[Finding, ...], cfg: Config, claimed: bool = True
) -> tuple[float, tuple[ScoredFinding, ...]]:
    """Sum of factor x weight, with each group's positive total capped at the group's cap.

    A capped group scales its findings down proportionally, so that every finding still shows
    the share it really contributed. Without a brand claim, positive scores outside the
    exempt groups are scaled by `scoring.unclaimed_factor` (1.0 in the shipped, learned
    weights: the checks already say how much a signal is worth without a claim)."""
    raw: list[tuple[Finding, str, float, float, float]] = []
    for finding in combine(findings, cfg.combos):
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
    scale = {g: _cap_scale(cfg.groups.get(g), t) for g, t in totals.items()}
    scored = tuple(
        ScoredFinding(
            rule=f.rule,
            group=group,
            score=round(s * scale.get(group, 1.0) if s > 0 else s, 2),
            evidence=f.evidence,
            description=describe(f.rule, cfg.combos),
            factor=f.factor,
            weight=weight,
            unclaimed=unclaimed,
            capped=scale.get(group, 1.0) if s > 0 else 1.0,
        )
        for f, group, s, weight, unclaimed in raw
        # Zero-weight findings stay: an explanation says what fired, not only what counted.
    )
    ordered = tuple(sorted(scored, key=lambda x: -abs(x.score)))
    return round(sum(x.score for x in ordered), 2), ordered


def _cap_scale(cap: float | None, total: float) -> float:
    if cap is None or math.isinf(cap) or total <= cap:
        return 1.0
    return cap / total


def decide(total: float, thresholds: dict[str, float]) -> str:
    verdict = "pass"
    for name in ("tag", "quarantine", "reject"):
        if total >= thresholds[name]:
            verdict = name
    return verdict
