"""`brandgate check-config`, `explain` and `rules` through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config.loader import ConfigError, load_config

GOLDEN = Path(__file__).parent / "golden"


def brandgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_config_ok_on_shipped_defaults() -> None:
    res = brandgate("check-config")
    assert res.returncode == 0, res.stderr
    assert "config OK" in res.stdout
    assert "brands:" in res.stdout


def test_check_config_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "brandgate.toml").write_text(
        "[thresholds]\ntag = 'high'\nquarantine = 8\nreject = 12\n"
    )
    res = brandgate("check-config", "--config", str(tmp_path))
    assert res.returncode == 2
    assert f"{tmp_path / 'brandgate.toml'}: thresholds.tag: expected a number" in res.stderr


def test_brand_overlay_error_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "brands").mkdir()
    bad = tmp_path / "brands" / "mine.toml"
    bad.write_text('[brands.acme]\nname = "ACME"\nsource = "us"\nsender_domains = "acme.example"\n')
    try:
        load_config(tmp_path)
    except ConfigError as exc:
        assert exc.file == str(bad)
        assert exc.key == "brands.acme.sender_domains"
    else:
        raise AssertionError("a string where a list belongs must be refused")


def test_unknown_rule_weight_is_reported(tmp_path: Path) -> None:
    (tmp_path / "brandgate.toml").write_text(
        '[rules]\nNO_SUCH_RULE = { weight = 1.0, group = "links" }\n'
    )
    res = brandgate("check-config", "--config", str(tmp_path))
    assert res.returncode == 2
    assert "NO_SUCH_RULE" in res.stderr


def test_overlay_threshold_changes_the_verdict(tmp_path: Path) -> None:
    msg = str(GOLDEN / "amazon_gift_freemail.eml")
    before = brandgate("explain", "--json", msg)
    (tmp_path / "brandgate.toml").write_text(
        "[thresholds]\ntag = 90\nquarantine = 95\nreject = 99\n"
    )
    after = brandgate("explain", "--json", "--config", str(tmp_path), msg)
    assert '"verdict": "pass"' not in before.stdout
    assert '"verdict": "pass"' in after.stdout


def test_explain_prints_claim_findings_and_verdict() -> None:
    res = brandgate("explain", str(GOLDEN / "paypal_lookalike.eml"))
    assert res.returncode == 0, res.stderr
    for want in (
        "Claim: PayPal",
        "LOOKALIKE_SENDER_DOMAIN",
        "Verdict: ",
        "Summary: Claims to be PayPal",
    ):
        assert want in res.stdout


def test_rules_lists_every_rule_with_weight() -> None:
    res = brandgate("rules")
    assert res.returncode == 0
    assert "BRAND_SENDER_UNVERIFIED" in res.stdout
    assert "(no weight)" not in res.stdout
