"""Golden explanations: what `brandgate explain` prints for hand-written messages.

A change in wording, a rule or a weight shows up here as a diff to review. Rewrite the golden
files with `scripts/update-golden` and read the diff before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from filters.engine import Engine
from filters.explain import render

GOLDEN = Path(__file__).parent / "golden"
MESSAGES = sorted(GOLDEN.glob("*.eml"))
# What each message must get, whatever the weights: brand misuse flagged, legitimate mail not.
EXPECTED = {
    "amazon_gift_freemail": "flagged",
    "paypal_lookalike": "flagged",
    "dhl_customs_pt": "flagged",
    "amazon_shipping_real": "pass",  # Amazon's own domain, links to Amazon only
    "shop_mentions_amazon": "pass",  # a mention is not a claim
    "friend_link": "pass",  # a friend's link to a brand's site
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_path(None)


def explanation(engine: Engine, path: Path) -> str:
    return render(engine.scan(path.read_bytes()), path.name) + "\n"


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.stem)
def test_explanation_matches_golden(engine: Engine, path: Path) -> None:
    golden = path.with_suffix(".txt")
    assert golden.is_file(), f"no golden file for {path.name}: run scripts/update-golden"
    assert explanation(engine, path) == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.stem)
def test_verdict_direction(engine: Engine, path: Path) -> None:
    verdict = engine.scan(path.read_bytes())
    want = EXPECTED[path.stem]
    if want == "pass":
        assert verdict.verdict == "pass", render(verdict)
    else:
        assert verdict.verdict != "pass", render(verdict)
        assert verdict.brand is not None
        assert verdict.summary.startswith(f"Claims to be {verdict.brand.name}")
