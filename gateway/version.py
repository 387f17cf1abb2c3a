"""brandgate's version, as installed (pyproject.toml), for --version and the headers we write."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def version() -> str:
    try:
        return metadata.version("brandgate")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"
