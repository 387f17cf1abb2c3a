"""Learning weights and thresholds (gateway/archives/tune.py), and `brandgate tune` / `replay --cv`.

The fits run on samples built here (rule -> factors), so every property is checked on data
whose answer is known: a rule that separates gets weight, noise does not, signs hold, the
thresholds meet their false-positive targets, folds never share a message.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from config.loader import load_config
from gateway.archives import tune
from gateway.cli.main import main

PRIOR = tune.Prior(
    weights={"STRONG": 4.0, "WEAK": 1.0, "NOISE": 1.0, "GUARD": -8.0, "RARE": 2.5},
    groups={"STRONG": "claim", "WEAK": "links", "NOISE": "lure", "GUARD": "auth", "RARE": "x"},
)


def _samples(n: int = 400, seed: int = 7) -> list[tune.Sample]:
    """Phish carry STRONG (and often WEAK); ham rarely STRONG, sometimes WEAK; NOISE is a coin
    flip for both; GUARD marks a few ham; RARE fires on two messages only."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        phish = i % 2 == 0
        x: dict[str, tuple[float, ...]] = {}
        if (phish and rng.random() < 0.9) or (not phish and rng.random() < 0.02):
            x["STRONG"] = (1.0,)
        if rng.random() < (0.6 if phish else 0.2):
            x["WEAK"] = (1.0,)
        if rng.random() < 0.5:
            x["NOISE"] = (1.0,)
        if not phish and rng.random() < 0.05:
            x["GUARD"] = (1.0,)
        if i in (3, 4):
            x["RARE"] = (1.0,)
        label = "phish" if phish else "ham"
        out.append(tune.Sample(f"/corpus/{label}/{i:04d}.eml", label, "src", "", x))
    return out


def test_fit_learns_the_separating_rule_and_keeps_signs() -> None:
    model = tune.fit(_samples(), PRIOR, tune.FitOptions(l2=1e-4, min_support=5))
    w = model.weights
    assert w["STRONG"] > w["WEAK"] > 0
    assert abs(w["NOISE"]) < 0.5 * w["WEAK"]  # a coin flip earns little
    assert w["GUARD"] <= 0  # a guard never learns to accuse
    assert "RARE" not in model.learned and w["RARE"] == 2.5  # too rare: the prior stays
    assert model.thresholds["tag"] == tune.TAG_SCALE


def test_thresholds_meet_their_false_positive_targets_on_training_ham() -> None:
    samples = _samples(1000)
    opt = tune.FitOptions(l2=1e-4, target_fpr=0.02, target_fpr_quarantine=0.01)
    model = tune.fit(samples, PRIOR, opt)
    ham = [s for s in samples if s.label == "ham"]
    for name, target in (("tag", 0.02), ("quarantine", 0.01), ("reject", 0.0)):
        over = sum(model.score(s) >= model.thresholds[name] for s in ham)
        assert over <= target * len(ham), name
    t = model.thresholds
    assert t["tag"] <= t["quarantine"] <= t["reject"]
    assert t["reject"] >= opt.min_ratio_reject * t["tag"]


def test_a_message_without_findings_always_passes() -> None:
    model = tune.fit(_samples(), PRIOR, tune.FitOptions())
    empty = tune.Sample("/x.eml", "ham", "src", "", {})
    assert model.verdict(empty) == "pass"


def test_score_rounds_like_the_engine() -> None:
    model = tune.Model({"A": 1.333}, {"tag": 4.0, "quarantine": 6.0, "reject": 8.0}, ("A",), 0.0)
    sample = tune.Sample("/x", "phish", "s", "", {"A": (1.0, 0.5)})
    assert model.score(sample) == round(round(1.333, 2) + round(0.6665, 2), 2)


def test_folds_are_deterministic_stratified_and_disjoint() -> None:
    samples = _samples(300)
    a, b = tune.folds(samples, 5), tune.folds(list(samples), 5)
    assert a == b
    for label in ("phish", "ham"):
        sizes = [sum(1 for s, f in zip(samples, a, strict=True) if s.label == label and f == k)
                 for k in range(5)]  # fmt: skip
        assert max(sizes) - min(sizes) <= 1


def test_fold_depends_on_the_file_name_not_its_folder() -> None:
    s1 = [tune.Sample(f"/a/{i}.eml", "ham", "o", "", {}) for i in range(20)]
    s2 = [tune.Sample(f"/elsewhere/b/{i}.eml", "ham", "o", "", {}) for i in range(20)]
    assert tune.folds(s1, 4) == tune.folds(s2, 4)


def test_cross_validation_scores_each_fold_with_a_model_that_never_saw_it() -> None:
    samples = _samples(200)
    ev, models = tune.cross_validate(samples, PRIOR, tune.FitOptions(l2=1e-3), 4)
    fold = tune.folds(samples, 4)
    for i, s in enumerate(samples):
        assert ev.scores[i] == models[fold[i]].score(s)
    with pytest.raises(ValueError):
        tune.cross_validate(samples, PRIOR, tune.FitOptions(), 1)


def test_fit_needs_both_classes() -> None:
    only_ham = [s for s in _samples() if s.label == "ham"]
    with pytest.raises(ValueError):
        tune.fit(only_ham, PRIOR, tune.FitOptions())


def test_wilson_interval() -> None:
    lo, hi = tune.wilson(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04
    lo, hi = tune.wilson(50, 100)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
    assert tune.wilson(0, 0) == (0.0, 1.0)


def test_figures_per_label_source_and_brand_ham() -> None:
    samples = [
        tune.Sample("/1", "ham", "a", "Amazon", {}),
        tune.Sample("/2", "ham", "b", "", {}),
        tune.Sample("/3", "phish", "a", "PayPal", {}),
    ]
    ev = tune.Evaluation(["tag", "pass", "pass"], [5.0, 0.0, 1.0])
    fig = tune.figures(samples, ev)
    assert fig["labels"]["ham"]["flagged"] == 1 and fig["labels"]["ham"]["total"] == 2
    assert fig["sources"]["ham a"]["flagged"] == 1
    assert fig["brand_ham"] == {**fig["brand_ham"], "flagged": 1, "total": 1}


def test_overlay_loads_and_gives_the_model_verdicts(tmp_path: Path) -> None:
    cfg = load_config(None, learned=False)
    prior = tune.Prior.of(cfg)
    weights = dict(prior.weights)
    weights["BRAND_SENDER_UNVERIFIED"] = 3.21
    model = tune.Model(weights, {"tag": 4.0, "quarantine": 6.5, "reject": 9.0}, (), 0.0)
    (tmp_path / "brandgate.toml").write_text(tune.overlay_toml(model, prior, ["a header"]))
    loaded = load_config(tmp_path)
    assert loaded.thresholds == {"tag": 4.0, "quarantine": 6.5, "reject": 9.0}
    assert loaded.rules["BRAND_SENDER_UNVERIFIED"].weight == 3.21
    assert loaded.scoring.unclaimed_factor == 1.0
    assert all(cap == float("inf") for cap in loaded.groups.values())


def _labelled_folder(tmp_path: Path) -> Path:
    """A tiny labelled archive: brand lures from strangers, and ordinary mail."""
    root = tmp_path / "mail"
    rows = ["path,label,brand,source"]
    for i in range(12):
        phish = (
            f"From: PayPal Service <service{i}@pp-alerts{i}.example>\r\nTo: u@x.example\r\n"
            f"Subject: Your PayPal account is limited {i}\r\nContent-Type: text/html\r\n\r\n"
            f"<p>Verify your account within 24 hours</p>"
            f"<a href='https://secure-login{i}.example/pp'>https://www.paypal.com</a>\r\n"
        )
        ham = (
            f"From: Ann Example <ann{i}@example.org>\r\nTo: u@x.example\r\n"
            f"Subject: minutes of meeting {i}\r\n\r\nSee you on Tuesday. https://example.org/m{i}\r\n"
        )
        for label, text in (("phish", phish), ("ham", ham)):
            path = root / label / f"{i:02d}.eml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            rows.append(f"{label}/{i:02d}.eml,{label},{'PayPal' if label == 'phish' else ''},t")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_tune_command_writes_an_overlay_that_config_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _labelled_folder(tmp_path)
    out = tmp_path / "overlay"
    out.mkdir()
    report = tmp_path / "r.json"
    rc = main(
        [
            "tune", str(root), "--labels", str(root / "labels.csv"), "--cv", "3",
            "--out", str(out), "--json", str(report), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "3-fold CV" in text and "per source" in text
    doc = json.loads(report.read_text())
    assert doc["cv"]["labels"]["phish"]["rate"] == 1.0
    assert doc["cv"]["labels"]["ham"]["flagged"] == 0
    cfg = load_config(out)
    assert cfg.thresholds["tag"] == 4.0
    assert main(["scan", str(root / "phish" / "00.eml"), "--config", str(out)]) in (0, 1)


def test_replay_cv_reports_cross_validated_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _labelled_folder(tmp_path)
    report = tmp_path / "r.json"
    rc = main(
        [
            "replay", str(root), "--labels", str(root / "labels.csv"), "--positive", "phish",
            "--cv", "3", "--json", str(report), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads(report.read_text())
    assert doc["cv"]["folds"] == 3
    assert doc["cv"]["labels"]["phish"]["total"] == 12
    assert "cross-validated" in capsys.readouterr().out


def test_tune_reports_a_missing_labels_file(tmp_path: Path) -> None:
    assert main(["tune", str(tmp_path), "--labels", str(tmp_path / "none.csv")]) == 2


def test_marketplace_rules_are_learned_like_any_other_once_they_fire() -> None:
    """The marketplace profile's rules sit in a group tune may learn (not a fixed policy group
    like allow/block): with labelled relayed mail they get weights; without, their priors."""
    prior = tune.Prior.of(load_config(learned=False))
    assert prior.groups["MARKETPLACE_CONTACT"] == "marketplace"
    assert "marketplace" not in tune.FitOptions().fixed_groups
    rng = random.Random(3)
    samples = []
    for i in range(300):
        phish = i % 2 == 0
        x: dict[str, tuple[float, ...]] = {}
        if phish and rng.random() < 0.8:
            x["MARKETPLACE_CONTACT"] = (1.0,)
        if rng.random() < 0.3:
            x["LURE_URGENCY"] = (1.0,)
        label = "phish" if phish else "ham"
        samples.append(tune.Sample(f"/c/{label}/{i}.eml", label, "relay", "", x))
    model = tune.fit(samples, prior, tune.FitOptions(min_support=5))
    assert "MARKETPLACE_CONTACT" in model.learned and model.weights["MARKETPLACE_CONTACT"] > 0
    assert "MARKETPLACE_PAID_REVIEW" not in model.learned  # never fired: the prior stays
    assert model.weights["MARKETPLACE_PAID_REVIEW"] == prior.weights["MARKETPLACE_PAID_REVIEW"]
