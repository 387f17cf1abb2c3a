"""`brandgate scan` and gateway.archives.parallel: formats, order across processes, stdin, Ctrl-C.

The fast cases drive scan_command in-process with a stand-in scanner (one that flags the word
"gift"), so they test the plumbing rather than the engine's judgement; the subprocess cases run
the real command with the real engine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filters.types import VERDICTS, Verdict
from gateway.archives.output import CSV_FIELDS
from gateway.archives.parallel import Scanner, map_ordered, scan_items
from gateway.archives.progress import Progress
from gateway.archives.read import Item
from gateway.cli import scan as cmd_scan

ROOT = Path(__file__).resolve().parent.parent


class GiftScanner:
    def scan(self, raw: bytes) -> Verdict:
        if b"boom" in raw:
            raise RuntimeError("boom")
        flagged = b"gift" in raw
        return Verdict(
            verdict="tag" if flagged else "pass",
            score=5.0 if flagged else 0.0,
            brand=None,
            findings=(),
            summary=f"{len(raw)} bytes\nsecond line",
        )


def gift_factory(config_path: str | None, trusted: tuple[str, ...]) -> Scanner:
    return GiftScanner()


def square(n: int) -> int:
    return n * n


def msg(subject: str, body: str = "Hello.\n") -> bytes:
    return f"From: Shop <news@shop.example>\nSubject: {subject}\n\n{body}".encode()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "mail"
    (root / "sub").mkdir(parents=True)
    (root / "a.eml").write_bytes(msg("hello"))
    (root / "sub" / "b.eml").write_bytes(msg("free gift card", "Claim your gift.\n"))
    (root / "sub" / "c.eml").write_bytes(msg("minutes"))
    return root


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd_scan.register(sub)
    return parser.parse_args(["scan", *argv])


def run_fake(*argv: str) -> int:
    return cmd_scan.scan_command(parse_args(*argv), factory=gift_factory)


def test_jsonl_records_parse_back(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run_fake(str(archive), "--format", "jsonl", "--output", str(out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in records] == [
        str(archive / "a.eml"),
        str(archive / "sub" / "b.eml"),
        str(archive / "sub" / "c.eml"),
    ]
    assert [r["verdict"] for r in records] == ["pass", "tag", "pass"]
    assert list(records[0])[:6] == ["source", "verdict", "score", "brand", "summary", "findings"]
    assert {"status", "error", "brand_key"} <= set(records[0])


def test_csv_parses_back(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert run_fake(str(archive), "--format", "csv", "-o", str(out)) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r["verdict"] for r in rows] == ["pass", "tag", "pass"]
    assert rows[1]["score"] == "5.00"
    assert "\n" not in rows[1]["summary"]


def test_text_lines_and_summary_on_stdout(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fake(str(archive), "--no-progress") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["tag", "5.00", "-"]
    assert f"{archive / 'sub' / 'b.eml'} — " in lines[1]
    assert "second line" in lines[1]  # the summary's newline folded into one line
    assert "3 messages in" in out
    assert any(line.split() == ["tag", "1", "33.3%"] for line in lines)


def test_summary_goes_to_stderr_for_jsonl(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fake(str(archive), "--format", "jsonl") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert "msg/s" in captured.err and "unreadable" in captured.err


def test_quiet_prints_no_summary(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_fake(str(archive), "--format", "jsonl", "--quiet") == 0
    assert capsys.readouterr().err == ""


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    assert run_fake(str(tmp_path / "nope")) == 2


def test_scan_error_becomes_error_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.eml").write_bytes(msg("boom"))
    assert run_fake(str(tmp_path), "--format", "jsonl") == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["status"] == "error" and record["verdict"] == "pass"
    assert "1 scan" in captured.err


def test_jobs_two_keeps_input_order(tmp_path: Path) -> None:
    items = [Item(f"m{i}", msg("gift" if i % 3 == 0 else "hi", "x" * i)) for i in range(300)]
    one = list(scan_items(iter(items), config_path=None, jobs=1, factory=gift_factory))
    two = list(scan_items(iter(items), config_path=None, jobs=2, window=32, factory=gift_factory))
    assert one == two
    assert [s for s, _ in two] == [i.source for i in items]


def test_submission_is_bounded_by_the_window() -> None:
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for n in range(10_000):
            pulled += 1
            yield n

    results = map_ordered(square, numbers(), jobs=2, window=40, batch_size=8)
    assert next(results) == 0
    assert pulled <= 40 + 8
    assert list(results) == [n * n for n in range(1, 10_000)]


def test_interrupt_stops_workers_and_propagates() -> None:
    def numbers() -> Iterator[int]:
        yield from range(50)
        raise KeyboardInterrupt

    got = []
    with pytest.raises(KeyboardInterrupt):
        for value in map_ordered(square, numbers(), jobs=2, window=16, batch_size=4):
            got.append(value)
    assert got == [n * n for n in range(len(got))]
    assert multiprocessing.active_children() == []


# --------------------------------------------------------------------------- the real command


def brandgate(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "scan", *argv],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_stdin_message_and_mbox() -> None:
    single = brandgate("-", "--format", "jsonl", stdin=msg("hello"))
    assert single.returncode == 0, single.stderr.decode()
    record = json.loads(single.stdout)
    assert record["source"] == "-" and record["verdict"] in VERDICTS

    mbox = b"".join(
        b"From x@shop.example Tue Sep  3 15:33:27 2002\n" + msg(s) + b"\n" for s in "abc"
    )
    multi = brandgate("-", "--format", "csv", stdin=mbox)
    assert multi.returncode == 0, multi.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(multi.stdout.decode())))
    assert [r["source"] for r in rows] == ["-#1", "-#2", "-#3"]


def test_real_engine_jobs_two_equals_jobs_one(archive: Path) -> None:
    mbox = archive / "box.mbox"
    mbox.write_bytes(
        b"".join(
            b"From x@shop.example Tue Sep  3 15:33:27 2002\n" + msg(f"n{i}") + b"\n"
            for i in range(40)
        )
    )
    one = brandgate(str(archive), "--format", "jsonl", "--jobs", "1", "--quiet")
    two = brandgate(str(archive), "--format", "jsonl", "--jobs", "2", "--quiet")
    assert one.returncode == 0 and two.returncode == 0, two.stderr.decode()
    assert one.stdout == two.stdout
    sources = [json.loads(line)["source"] for line in one.stdout.splitlines()]
    assert len(sources) == 43 and sources[0] == str(archive / "a.eml")
    assert sources[1] == f"{mbox}#1"


# --------------------------------------------------------------------------- progress bar


def test_progress_bar_shows_count_rate_and_eta() -> None:
    stream = io.StringIO()
    bar = Progress(200, stream=stream, enabled=True, min_interval=0.0)
    bar.update(50)
    assert bar.first is not None
    bar.first = (bar.first[0] - 10.0, 0)  # as if the 50 messages took 10 s
    line = bar.line()
    assert line.startswith("50/200  25% [")
    assert "5 msg/s" in line and "ETA 0:30" in line
    bar.close()
    assert stream.getvalue().endswith("\n") and "\r" in stream.getvalue()


def test_progress_bar_without_total_and_when_disabled() -> None:
    stream = io.StringIO()
    bar = Progress(None, stream=stream, enabled=True, min_interval=0.0)
    bar.update(3)
    assert bar.line().startswith("3 msg ")
    quiet = io.StringIO()
    off = Progress(10, stream=quiet)  # a StringIO is not a terminal: never drawn
    off.update(5)
    off.close()
    assert quiet.getvalue() == "" and off.count == 5
