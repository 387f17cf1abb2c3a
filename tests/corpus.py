"""Where the shared labelled corpus lives, for the tests that measure on it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("BRANDGATE_CORPUS", ROOT.parent / "shared" / "corpus"))
SKIP_REASON = f"labelled corpus not found at {CORPUS} (set BRANDGATE_CORPUS to its folder)"


def available() -> bool:
    return (CORPUS / "labels.csv").is_file() and (CORPUS / "dev").is_dir()


def labelled() -> list[tuple[Path, str, str]]:
    """(path, label, brand) for every dev message listed in labels.csv."""
    out = []
    with (CORPUS / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            path = CORPUS / row["path"]
            if path.is_file():
                out.append((path, row["label"], row.get("brand") or ""))
    return out
