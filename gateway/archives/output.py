"""Record formats and the end-of-run summary, shared by `scan` and `replay`.

A record is `{"source": ..., **Verdict.to_dict()}` with the keys people read first in front:
source, verdict, score, brand, summary, findings, then the rest of to_dict().
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from filters.types import VERDICTS

FORMATS = ("text", "jsonl", "csv")
CSV_FIELDS = ("source", "verdict", "score", "brand", "rules", "summary")
_FIRST_KEYS = ("source", "verdict", "score", "brand", "summary", "findings")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def record(source: str, verdict: Mapping[str, Any]) -> dict[str, Any]:
    """The jsonl record for one message."""
    out: dict[str, Any] = {"source": source}
    for key in _FIRST_KEYS[1:]:
        if key in verdict:
            out[key] = verdict[key]
    for key, value in verdict.items():
        out.setdefault(key, value)
    return out


def one_line(text: object) -> str:
    """Control characters (newlines from folded headers, ESC from hostile ones) as spaces, so
    one message stays one line and cannot drive the terminal."""
    return _CONTROL.sub(" ", str(text)).strip()


def rules_of(verdict: Mapping[str, Any]) -> list[str]:
    return [str(f.get("rule", "")) for f in verdict.get("findings") or ()]


def text_line(source: str, verdict: Mapping[str, Any]) -> str:
    """ "verdict score brand source — summary", aligned for reading down a column."""
    brand = verdict.get("brand") or "-"
    score = float(verdict.get("score") or 0.0)
    summary = one_line(verdict.get("summary") or "")
    status = "" if verdict.get("status", "ok") == "ok" else f" [{verdict.get('status')}]"
    return (
        f"{verdict.get('verdict', '?'):<10} {score:6.2f} {one_line(brand):<14} "
        f"{one_line(source)} — {summary}{status}"
    )


class RecordWriter(Protocol):
    def write(self, source: str, verdict: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, source: str, verdict: Mapping[str, Any]) -> None:
        self.stream.write(json.dumps(record(source, verdict), ensure_ascii=False))
        self.stream.write("\n")

    def close(self) -> None:
        self.stream.flush()


class CsvWriter:
    """source,verdict,score,brand,rules,summary; rules space-separated (ids have no spaces)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(CSV_FIELDS)

    def write(self, source: str, verdict: Mapping[str, Any]) -> None:
        self.writer.writerow(
            (
                source,
                verdict.get("verdict", ""),
                f"{float(verdict.get('score') or 0.0):.2f}",
                verdict.get("brand") or "",
                " ".join(rules_of(verdict)),
                one_line(verdict.get("summary") or ""),
            )
        )

    def close(self) -> None:
        self.stream.flush()


class TextWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, source: str, verdict: Mapping[str, Any]) -> None:
        self.stream.write(text_line(source, verdict))
        self.stream.write("\n")

    def close(self) -> None:
        self.stream.flush()


def make_writer(fmt: str, stream: TextIO) -> RecordWriter:
    if fmt == "jsonl":
        return JsonlWriter(stream)
    if fmt == "csv":
        return CsvWriter(stream)
    if fmt == "text":
        return TextWriter(stream)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


# --------------------------------------------------------------------------- summary


@dataclass(slots=True)
class Tally:
    """Counts for the end-of-run table."""

    verdicts: Counter[str] = field(default_factory=Counter)
    scan_errors: int = 0  # records with status "error" (the engine's fallback was used)
    not_mail: int = 0  # files that are no mail (status "not-mail"): not scanned
    messages: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    def add(self, verdict: Mapping[str, Any]) -> None:
        self.messages += 1
        self.verdicts[str(verdict.get("verdict", "?"))] += 1
        status = verdict.get("status", "ok")
        if status == "not-mail":
            self.not_mail += 1
        elif status != "ok":
            self.scan_errors += 1

    def stop(self) -> None:
        self.finished = time.perf_counter()

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.perf_counter()
        return max(end - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed


def plural(n: int, word: str, many: str | None = None) -> str:
    """The word for n of it: 1 message, 2 messages (`many` for irregular plurals)."""
    return word if n == 1 else (many or word + "s")


def summary_table(
    tally: Tally,
    *,
    archive_errors: int = 0,
    oversize: int = 0,
    jobs: int = 1,
    interrupted: bool = False,
) -> str:
    """Counts per verdict, throughput and errors, as a small aligned table."""
    names = list(VERDICTS) + sorted(set(tally.verdicts) - set(VERDICTS))
    total = tally.messages
    lines = [f"{'verdict':<12}{'messages':>10}{'share':>9}"]
    for name in names:
        count = tally.verdicts.get(name, 0)
        share = 100.0 * count / total if total else 0.0
        lines.append(f"{name:<12}{count:>10}{share:>8.1f}%")
    lines.append(f"{'total':<12}{total:>10}{100.0 if total else 0.0:>8.1f}%")
    lines.append(
        f"{total} {plural(total, 'message')} in {tally.elapsed:.2f} s: {tally.rate:.1f} msg/s"
        f" ({jobs} {plural(jobs, 'job')})"
    )
    lines.append(
        f"errors: {tally.scan_errors} scan, {archive_errors} unreadable; "
        f"{oversize} over the size limit"
    )
    if tally.not_mail:
        lines.append(
            f"not mail: {tally.not_mail} {plural(tally.not_mail, 'file')} (empty, binary or "
            "without a mail header) passed over, counted as pass above"
        )
    if interrupted:
        lines.append("interrupted: the results above are partial")
    return "\n".join(lines) + "\n"
