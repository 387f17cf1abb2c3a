"""`brandgate replay`: labels, metrics, rule statistics, threshold sweep, config diff.

Most tests use a fake scan (scores read from an X-Fake-Score header) so that the figures are
known in advance; the config-diff and corpus tests run the real engine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_config
from filters.engine import Engine
from filters.types import VERDICTS
from gateway.archives import replay
from gateway.archives.read import iter_messages
from gateway.archives.report import render
from tests import corpus

# --------------------------------------------------------------------------- a fake scan


def fake_verdict(raw: bytes, thresholds: dict[str, float]) -> dict[str, Any]:
    """Score and rules from X-Fake-Score / X-Fake-Rules headers; verdict from thresholds."""
    score, rules = 0.0, []
    for line in raw.split(b"\n"):
        if line.startswith(b"X-Fake-Score:"):
            score = float(line.split(b":", 1)[1])
        elif line.startswith(b"X-Fake-Rules:"):
            rules = [r.strip() for r in line.split(b":", 1)[1].decode().split(",") if r.strip()]
    verdict = "pass"
    for name in VERDICTS[1:]:
        if score >= thresholds[name]:
            verdict = name
    share = score / len(rules) if rules else 0.0
    return {
        "verdict": verdict,
        "score": round(score, 2),
        "brand": "Example" if rules else None,
        "summary": f"fake verdict, score {score}",
        "status": "ok",
        "findings": [{"rule": r, "group": "claim", "score": share, "evidence": []} for r in rules],
    }


def fake_scan(paths: Sequence[str], config: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    thresholds = _thresholds(config)
    for item in iter_messages(list(paths)):
        yield item.source, fake_verdict(item.raw, thresholds)


def write_msg(path: Path, score: float, rules: str = "", subject: str = "hello") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"From: a@example.org\nTo: b@example.net\nSubject: "
        + subject.encode()
        + f"\nX-Fake-Score: {score}\nX-Fake-Rules: {rules}\n\nbody\n".encode()
    )
    return path


RULES = {"RULE_A": "rule a", "RULE_B": "rule b", "RULE_NEVER": "never fires"}


def run_fake(
    paths: Sequence[str],
    labeller: replay.Labeller,
    *,
    compare: str | None = None,
    list_cap: int = 500,
    target_fpr: float = 0.0,
) -> dict[str, Any]:
    options = replay.Options(
        paths=paths,
        labeller=labeller,
        labels_from="test",
        policy=replay.LabelPolicy.of(["phish", "spam"], ["ham"]),
        compare_config=compare,
        target_fpr=target_fpr,
        list_cap=list_cap,
    )
    out = replay.run(options, fake_scan, thresholds=_thresholds, rules=RULES)
    return replay.result(out)


def _thresholds(config: str | None) -> dict[str, float]:
    """The fake scores below are placed around fixed thresholds, whatever the shipped learned
    weights say (a config dir given to --compare-config still counts)."""
    if config is not None:
        return replay.config_thresholds(config)
    return {"tag": 4.0, "quarantine": 8.0, "reject": 12.0}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """phish: 9, 5, 1 (one miss); spam: 4.5; ham: 0, 0, 2, 4.2 (one false positive);
    malformed: 7 (reported, not scored). Shipped thresholds: tag 4, quarantine 8, reject 12."""
    root = tmp_path / "box"
    write_msg(root / "phish" / "p1.eml", 9, "RULE_A,RULE_B")
    write_msg(root / "phish" / "p2.eml", 5, "RULE_A")
    write_msg(root / "phish" / "p3.eml", 1, "RULE_B")
    write_msg(root / "spam" / "deep" / "s1.eml", 4.5, "RULE_A")
    write_msg(root / "ham" / "h1.eml", 0)
    write_msg(root / "ham" / "h2.eml", 0)
    write_msg(root / "ham" / "h3.eml", 2, "RULE_B")
    write_msg(root / "ham" / "h4.eml", 4.2, "RULE_B", subject="<script>alert(1)</script>")
    write_msg(root / "malformed" / "m1.eml", 7, "RULE_A")
    return root


# --------------------------------------------------------------------------- metrics


def test_confusion_figures() -> None:
    m = replay.confusion(tp=8, fp=2, fn=2, tn=88)
    assert (m["precision"], m["recall"], m["f1"]) == (0.8, 0.8, 0.8)
    assert m["fpr"] == round(2 / 90, 6)
    assert (m["positives"], m["negatives"]) == (10, 90)


def test_confusion_undefined_figures_are_none() -> None:
    m = replay.confusion(tp=0, fp=0, fn=0, tn=5)
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    assert m["fpr"] == 0.0


def test_folder_labels_metrics_and_lists(archive: Path) -> None:
    doc = run_fake([str(archive)], replay.FolderLabels(["phish", "spam", "ham", "malformed"]))
    per = doc["per_label"]
    assert list(per) == ["phish", "spam", "ham", "malformed"]  # positives, negatives, others
    assert (per["phish"]["pass"], per["phish"]["tag"], per["phish"]["quarantine"]) == (1, 1, 1)
    assert (per["spam"]["tag"], per["ham"]["pass"], per["ham"]["tag"]) == (1, 3, 1)
    assert per["malformed"] == {
        "kind": "other", "total": 1, "pass": 0, "tag": 1, "quarantine": 0, "reject": 0,
        "flagged": 1, "errors": 0,
    }  # fmt: skip
    m = doc["metrics"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["precision"] == 0.75 and m["recall"] == 0.75 and m["fpr"] == 0.25
    fp, fn = doc["false_positives"], doc["false_negatives"]
    assert fp["total"] == 1 and fp["shown"][0]["source"].endswith("h4.eml")
    assert fp["shown"][0]["rules"] == ["RULE_B"] and fp["shown"][0]["label"] == "ham"
    assert fn["total"] == 1 and fn["shown"][0]["source"].endswith("p3.eml")


def test_lists_are_capped_and_counted(tmp_path: Path) -> None:
    for i in range(7):
        write_msg(tmp_path / "phish" / f"{i}.eml", 0)
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish"]), list_cap=3)
    fn = doc["false_negatives"]
    assert (fn["total"], len(fn["shown"]), fn["omitted"]) == (7, 3, 4)


def test_rule_statistics(archive: Path) -> None:
    doc = run_fake([str(archive)], replay.FolderLabels(["phish", "spam", "ham", "malformed"]))
    rules = {r["rule"]: r for r in doc["rules"]}
    a, b = rules["RULE_A"], rules["RULE_B"]
    # RULE_A: p1, p2, s1 (positives), m1 (other); RULE_B: p1, p3 (positives), h3, h4 (ham)
    assert (a["hits_positive"], a["hits_negative"], a["hits_other"]) == (3, 0, 1)
    assert (b["hits_positive"], b["hits_negative"]) == (2, 2)
    assert a["pct_positive"] == 75.0 and b["pct_negative"] == 50.0
    assert a["so"] == 1.0 and b["so"] == round(50 / (50 + 50), 3)
    total = 9 + 5 + 1 + 4.5 + 2 + 4.2 + 7
    assert a["score_sum"] == round(4.5 + 5 + 4.5 + 7, 2)
    assert a["score_share"] == round((4.5 + 5 + 4.5 + 7) / total, 4)
    assert doc["rules_never_fired"] == ["RULE_NEVER"]


# --------------------------------------------------------------------------- threshold sweep


def test_sweep_counts_every_candidate_threshold() -> None:
    pos = Counter({100: 1, 500: 1, 900: 1})  # scores 1, 5, 9 (hundredths)
    neg = Counter({0: 2, 200: 1, 500: 1})
    points = replay.sweep(pos, neg)
    got = [(p["threshold"], p["fp"], p["fn"]) for p in points]
    assert got == [(0.0, 4, 0), (1.0, 2, 0), (2.0, 2, 1), (5.0, 1, 1), (9.0, 0, 2), (9.01, 0, 3)]
    assert points[0]["fpr"] == 1.0 and points[-1]["recall"] == 0.0


def test_lowest_threshold_meeting_target() -> None:
    pos = Counter({100: 1, 500: 1, 900: 1})
    neg = Counter({0: 2, 200: 1, 500: 1})
    points = replay.sweep(pos, neg)
    best = replay.lowest_meeting(points, 0.25)
    assert best is not None and best["threshold"] == 5.0 and best["recall"] == round(2 / 3, 4)
    zero = replay.lowest_meeting(points, 0.0)
    assert zero is not None and zero["threshold"] == 9.0
    assert replay.lowest_meeting(replay.sweep(pos, Counter()), 0.5) is None  # no negatives


def test_sweep_in_result_and_configured_point(archive: Path) -> None:
    doc = run_fake([str(archive)], replay.FolderLabels(["phish", "spam", "ham"]), target_fpr=0.0)
    sweep = doc["sweep"]
    assert sweep["recommended_tag"]["threshold"] == 4.5  # the first above ham's 4.2
    assert sweep["recommended_tag"]["fn"] == 1
    conf = sweep["configured_tag"]
    assert conf["threshold"] == 4.2 and conf["fp"] == doc["metrics"]["fp"]
    assert conf["fn"] == doc["metrics"]["fn"]


def test_histogram_bins() -> None:
    hist = replay.histogram({"ham": Counter({0: 3, 150: 1}), "phish": Counter({950: 2})})
    assert (hist["low"], hist["width"], hist["bins"]) == (0.0, 1.0, 10)
    assert hist["counts"]["ham"][0] == 3 and hist["counts"]["ham"][1] == 1
    assert hist["counts"]["phish"][9] == 2 and sum(hist["counts"]["phish"]) == 2


# --------------------------------------------------------------------------- labels


def test_csv_labels_relative_paths_and_mbox(tmp_path: Path, monkeypatch: Any) -> None:
    data = tmp_path / "data"
    write_msg(data / "a.eml", 0)
    (data / "box.mbox").write_bytes(b"")
    (tmp_path / "labels.csv").write_text(
        "path,label,brand\ndata/a.eml,HAM,\ndata/box.mbox,spam,\ndata/box.mbox#2,phish,\n"
    )
    labels = replay.CsvLabels(tmp_path / "labels.csv")
    monkeypatch.chdir(data)
    assert labels("a.eml") == "ham"  # relative to the cwd, matched by resolved path
    assert labels(str(data / "a.eml")) == "ham"
    assert labels("box.mbox#1") == "spam"  # the whole mbox
    assert labels("box.mbox#2") == "phish"  # one message of it
    assert labels("other.eml") is None


def test_csv_labels_need_a_header(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("a.eml,ham\n")
    with pytest.raises(replay.LabelError, match="header"):
        replay.CsvLabels(tmp_path / "l.csv")


def test_folder_labels_nearest_parent(tmp_path: Path) -> None:
    labels = replay.FolderLabels(["phish", "ham"])
    assert labels(str(tmp_path / "ham" / "x" / "phish" / "a.eml")) == "phish"
    assert labels(str(tmp_path / "ham" / "cur" / "b")) == "ham"
    assert labels(str(tmp_path / "ham" / "box.mbox#7")) == "ham"
    assert labels(str(tmp_path / "misc" / "c.eml")) is None


def test_unlabelled_messages_are_reported_not_scored(tmp_path: Path) -> None:
    write_msg(tmp_path / "misc" / "a.eml", 9)
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish", "ham"]))
    assert doc["per_label"][replay.UNLABELLED]["kind"] == "other"
    assert doc["metrics"]["positives"] == 0 and doc["metrics"]["fp"] == 0


def test_positive_and_negative_must_not_overlap() -> None:
    with pytest.raises(replay.LabelError):
        replay.LabelPolicy.of(["spam"], ["spam", "ham"])


# --------------------------------------------------------------------------- compare, interrupt


def overlay(tmp_path: Path, tag: float) -> Path:
    cfg = tmp_path / f"cfg-{tag}"
    cfg.mkdir()
    (cfg / "brandgate.toml").write_text(f"[thresholds]\ntag = {tag}\nquarantine = 8\nreject = 12\n")
    return cfg


def test_compare_config_lists_changed_verdicts(archive: Path, tmp_path: Path) -> None:
    cfg = overlay(tmp_path, 1.5)  # only h3 (ham, 2.0) lies in [1.5, 4)
    doc = run_fake(
        [str(archive)],
        replay.FolderLabels(["phish", "spam", "ham", "malformed"]),
        compare=str(cfg),
    )
    cmp = doc["compare"]
    assert cmp["thresholds"]["tag"] == 1.5 and doc["thresholds"]["tag"] == 4.0
    changed = cmp["changed"]
    assert changed["total"] == 1 and changed["transitions"] == {"pass->tag": 1}
    entry = changed["shown"][0]
    assert entry["source"].endswith("h3.eml") and entry["label"] == "ham"
    assert entry["before"]["verdict"] == "pass" and entry["after"]["verdict"] == "tag"
    assert entry["after"]["rules"] == ["RULE_B"] and entry["before"]["summary"]
    assert cmp["metrics"]["fp"] == doc["metrics"]["fp"] + 1


def test_interrupt_keeps_a_partial_result(archive: Path) -> None:
    def interrupted(
        paths: Sequence[str], config: str | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for n, pair in enumerate(fake_scan(paths, config)):
            if n == 3:
                raise KeyboardInterrupt
            yield pair

    options = replay.Options(
        paths=[str(archive)],
        labeller=replay.FolderLabels(["phish", "ham"]),
        labels_from="folders",
        policy=replay.LabelPolicy.of(["phish"], ["ham"]),
    )
    out = replay.run(options, interrupted, thresholds=replay.config_thresholds, rules=RULES)
    doc = replay.result(out)
    assert out.interrupted and not doc["complete"] and doc["messages"] == 3
    assert "Interrupted" in doc["note"]
    assert "Interrupted" in render(doc)


def test_report_escapes_message_text(archive: Path) -> None:
    doc = run_fake([str(archive)], replay.FolderLabels(["phish", "spam", "ham"]))
    doc["false_positives"]["shown"][0]["summary"] = '<script>alert(1)</script><img src="x">'
    page = render(doc)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert csp_of(page).startswith("default-src 'none';")


def csp_of(page: str) -> str:
    found: list[str] = []

    class Meta(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
                found.append(a.get("content") or "")

    Meta().feed(page)
    assert len(found) == 1
    return found[0]


def test_json_is_serialisable(archive: Path) -> None:
    doc = run_fake([str(archive)], replay.FolderLabels(["phish", "spam", "ham"]))
    again = json.loads(json.dumps(doc))
    assert again["metrics"] == doc["metrics"]


# --------------------------------------------------------------------------- the real engine

BRANDGATE = shutil.which("brandgate", path=os.path.dirname(sys.executable)) or "brandgate"

_MESSAGES = {
    "phish/gift.eml": (
        "From: Amazon Rewards <rewards@gift-winner.example>\nTo: you@example.net\n"
        "Subject: Your Amazon gift card is waiting\nContent-Type: text/html\n\n"
        '<p>Claim your $500 Amazon gift card now!</p><a href="http://amaz0n-gift.example/claim">'
        "https://www.amazon.com/claim</a>\n"
    ),
    "phish/refund.eml": (
        "From: PayPal Service <service@pp-refund.example>\nTo: you@example.net\n"
        "Reply-To: refunds@gmail.com\nSubject: Refund pending - verify your account\n\n"
        "Your PayPal refund of $87 expires in 24 hours. Verify at http://192.0.2.7/paypal/login\n"
    ),
    "ham/note.eml": (
        "From: Ann <ann@example.org>\nTo: bob@example.net\nSubject: lunch\n\nSee you at noon.\n"
    ),
    "ham/shop.eml": (
        "From: Shop <news@shop.example>\nTo: bob@example.net\nSubject: Cash back week\n\n"
        "We sell on Amazon and eBay too. Cash back rewards this week at https://shop.example/\n"
    ),
}


def _real_archive(root: Path) -> Path:
    for rel, text in _MESSAGES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_compare_config_with_the_real_engine(tmp_path: Path) -> None:
    box = _real_archive(tmp_path / "box")
    cfg = overlay(tmp_path, 0.01)  # anything that scores at all becomes "tag"
    engine = Engine(load_config(None))
    expected = set()
    for path in sorted(box.rglob("*.eml")):
        v = engine.scan(path.read_bytes())
        if v.verdict == "pass" and round(v.score, 2) >= 0.01:
            expected.add(str(path))
    options = replay.Options(
        paths=[str(box)],
        labeller=replay.FolderLabels(["phish", "ham"]),
        labels_from="folders",
        policy=replay.LabelPolicy.of(["phish"], ["ham"]),
        compare_config=str(cfg),
    )
    scanner = replay.EngineScan()
    out = replay.run(
        options,
        scanner,
        thresholds=replay.config_thresholds,
        rules=replay.registered_rules(),
        pair=scanner.pair,
    )
    changed = replay.result(out)["compare"]["changed"]
    assert {c["source"] for c in changed["shown"]} == expected
    assert changed["total"] == len(expected)
    for c in changed["shown"]:
        assert (c["before"]["verdict"], c["after"]["verdict"]) == ("pass", "tag")
        assert c["before"]["score"] == c["after"]["score"]


def _corpus_subset() -> list[tuple[Path, str]]:
    # A deterministic quarter of ham and phish keeps the test fast.
    return [
        (path, label)
        for path, label, _ in corpus.labelled()
        if label in ("ham", "phish") and path.name[0] in "0123"
    ]


@pytest.mark.corpus
@pytest.mark.skipif(not corpus.available(), reason=corpus.SKIP_REASON)
def test_corpus_replay_agrees_with_scan_jsonl(tmp_path: Path) -> None:
    subset = _corpus_subset()
    paths = [str(p) for p, _ in subset]
    assert len(paths) > 100
    label_of = {os.path.realpath(p): lab for p, lab in subset}
    scan = subprocess.run(
        [BRANDGATE, "scan", "--format", "jsonl", "--jobs", "2", "-q", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    direct: dict[str, Counter[str]] = {"ham": Counter(), "phish": Counter()}
    fps, fns = set(), set()
    for line in scan.stdout.splitlines():
        rec = json.loads(line)
        label = label_of[os.path.realpath(rec["source"])]
        direct[label][rec["verdict"]] += 1
        if label == "ham" and rec["verdict"] != "pass":
            fps.add(rec["source"])
        if label == "phish" and rec["verdict"] == "pass":
            fns.add(rec["source"])
    assert sum(sum(c.values()) for c in direct.values()) == len(paths)

    out_json = tmp_path / "replay.json"
    rep = subprocess.run(
        [BRANDGATE, "replay", "--labels", str(corpus.CORPUS / "labels.csv"), "--jobs", "2",
         "--no-progress", "--json", str(out_json), "--report", str(tmp_path / "r.html"), *paths],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(out_json.read_text())
    assert doc["messages"] == len(paths) and doc["complete"]
    for label, counts in direct.items():
        row = doc["per_label"][label]
        assert {v: row[v] for v in VERDICTS} == {v: counts.get(v, 0) for v in VERDICTS}, label
    tp = sum(direct["phish"].values()) - len(fns)
    m = doc["metrics"]
    assert (m["fp"], m["fn"], m["tp"]) == (len(fps), len(fns), tp)
    assert m["tn"] == sum(direct["ham"].values()) - len(fps)
    assert m["precision"] == (round(tp / (tp + len(fps)), 4) if tp + len(fps) else None)
    assert m["recall"] == round(tp / (tp + len(fns)), 4)
    assert {e["source"] for e in doc["false_positives"]["shown"]} == fps
    assert {e["source"] for e in doc["false_negatives"]["shown"]} <= fns
    assert doc["false_negatives"]["total"] == len(fns)
    assert "precision" in rep.stdout


def test_cli_rejects_a_bad_labels_file(tmp_path: Path) -> None:
    write_msg(tmp_path / "a.eml", 0)
    (tmp_path / "labels.csv").write_text("file,kind\n")
    rep = subprocess.run(
        [BRANDGATE, "replay", "--labels", str(tmp_path / "labels.csv"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert rep.returncode == 2 and "path" in rep.stderr


def test_ctrl_c_writes_a_partial_report(tmp_path: Path) -> None:
    # The archive is a FIFO that we keep open: replay reads what we wrote, then waits for more
    # until SIGINT arrives -- interrupted mid-archive however fast or slow the machine is.
    fifo = tmp_path / "ham" / "box.mbox"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    report, out_json = tmp_path / "r.html", tmp_path / "r.json"
    proc = subprocess.Popen(
        [BRANDGATE, "replay", str(fifo), "--labels", "folders", "--no-progress", "--jobs", "1",
         "--report", str(report), "--json", str(out_json)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        with fifo.open("wb") as writer:  # blocks until replay opens the FIFO
            for i in range(5):
                writer.write(b"From x@example.org Sat Jan  1 00:00:00 2000\n")
                writer.write(f"From: a@example.org\nSubject: m{i}\n\nhello\n\n".encode())
            writer.flush()
            # A SIGINT that lands while the interpreter is still starting can be lost; a user
            # presses Ctrl-C again, and so does the test (bounded).
            stderr = ""
            for _ in range(60):
                proc.send_signal(signal.SIGINT)
                try:
                    _, stderr = proc.communicate(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    continue
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    doc = json.loads(out_json.read_text())
    assert doc["complete"] is False and "Interrupted" in doc["note"]
    assert 0 <= doc["messages"] <= 5
    assert "Interrupted" in report.read_text()
