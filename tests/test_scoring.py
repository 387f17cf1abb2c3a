"""Scoring: a sum of factor x weight, combinations as rules of their own, caps when asked."""

from __future__ import annotations

from dataclasses import replace

from config.loader import RuleWeight, load_config
from filters.scoring import combine, decide, score
from filters.types import Finding

COMBOS = {"CLAIM_DIVERSION": ("BRAND_SENDER_UNVERIFIED", "BRAND_LINK_DIVERSION")}


def test_a_combination_fires_with_the_product_of_its_factors() -> None:
    found = (
        Finding("BRAND_SENDER_UNVERIFIED", ("claims Amazon",), 0.8),
        Finding("BRAND_LINK_DIVERSION", ("links go to evil.example",), 0.5),
    )
    out = combine(found, COMBOS)
    combo = [f for f in out if f.rule == "CLAIM_DIVERSION"]
    assert len(combo) == 1 and combo[0].factor == 0.4
    assert any("evil.example" in e for e in combo[0].evidence)


def test_a_combination_needs_every_part() -> None:
    # Near miss: a claim alone is not the combination.
    found = (Finding("BRAND_SENDER_UNVERIFIED", ("claims Amazon",), 1.0),)
    assert combine(found, COMBOS) == found


def test_score_is_the_sum_of_factor_times_weight_without_caps() -> None:
    cfg = load_config()
    cfg = replace(
        cfg,
        rules={
            **cfg.rules,
            "BRAND_SENDER_UNVERIFIED": RuleWeight(3.0, "claim"),
            "BRAND_LINK_DIVERSION": RuleWeight(2.0, "links"),
            "CLAIM_DIVERSION": RuleWeight(1.5, "combo"),
        },
        combos=COMBOS,
        groups={g: float("inf") for g in cfg.groups},
    )
    found = (
        Finding("BRAND_SENDER_UNVERIFIED", ("a",), 1.0),
        Finding("BRAND_LINK_DIVERSION", ("b",), 0.5),
    )
    total, scored = score(found, cfg)
    assert total == 3.0 + 1.0 + 0.75
    by_rule = {s.rule: s for s in scored}
    assert by_rule["CLAIM_DIVERSION"].description.startswith("Together:")
    assert by_rule["BRAND_LINK_DIVERSION"].factor == 0.5
    assert by_rule["BRAND_LINK_DIVERSION"].weight == 2.0


def test_a_group_cap_still_bounds_a_group_when_an_admin_sets_one() -> None:
    cfg = load_config()
    cfg = replace(
        cfg,
        rules={**cfg.rules, "LURE_REWARD": RuleWeight(3.0, "lure")},
        groups={**cfg.groups, "lure": 2.0},
        combos={},
    )
    total, scored = score((Finding("LURE_REWARD", ("gift card",), 1.0),), cfg)
    assert total == 2.0 and scored[0].capped < 1.0


def test_decide_takes_the_highest_threshold_reached() -> None:
    t = {"tag": 4.0, "quarantine": 6.0, "reject": 8.0}
    assert [decide(s, t) for s in (0.0, 4.0, 7.9, 8.0)] == ["pass", "tag", "quarantine", "reject"]
