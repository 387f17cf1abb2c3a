"""The README's layout section matches the tree: a newcomer finds any front door in one step.

Every module of gateway/ is named under its own sub-package in the layout, every module the
layout names exists there, and `filters/` never imports `gateway/` (the engine knows nothing
of SMTP).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    return block.splitlines()


def _gateway_layout() -> dict[str, set[str]]:
    """Sub-package ("" for gateway/ itself) -> the module file names the layout gives it."""
    named: dict[str, set[str]] = {}
    current: str | None = None
    for line in _layout_block():
        head = re.match(r"^(\S+)/\s", line + " ")
        if head:  # a top-level folder: gateway/, filters/, config/ ...
            current = "" if head.group(1) == "gateway" else None
            continue
        sub = re.match(r"^  (\w+)/\s", line)
        if sub and current is not None:
            current = sub.group(1)
            named.setdefault(current, set())
        elif re.match(r"^  \w+\.py", line) and current is not None:
            current = ""  # back at gateway/'s own modules
        if current is None:
            continue
        for name in re.findall(r"\b(\w+\.py)\b", line):
            named.setdefault(current, set()).add(name)
    return named


def _modules(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}


def test_every_gateway_module_is_in_the_layout_under_its_package() -> None:
    named = _gateway_layout()
    packages = {p.parent.name for p in GATEWAY.glob("*/__init__.py")}
    assert packages == set(named) - {""}, "sub-packages in the tree vs. the README layout"
    for pkg in packages:
        missing = _modules(GATEWAY / pkg) - named[pkg]
        assert not missing, f"gateway/{pkg}/ modules missing from the README layout: {missing}"
    missing = _modules(GATEWAY) - named[""]
    assert not missing, f"gateway/ modules missing from the README layout: {missing}"


def test_every_module_the_layout_names_exists() -> None:
    for pkg, names in _gateway_layout().items():
        folder = GATEWAY / pkg if pkg else GATEWAY
        absent = names - _modules(folder)
        assert not absent, f"README layout names modules that gateway/{pkg} lacks: {absent}"


def test_filters_import_nothing_from_gateway() -> None:
    for path in (ROOT / "filters").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("gateway"), f"{path} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("gateway"), f"{path} imports {alias.name}"


def test_each_front_door_imports_no_other_door() -> None:
    """The SMTP modes, the milter and the archives share service.py/actions.py, never
    each other; only the command line reaches into every door."""
    doors = ("smtp", "milter", "archives")
    for door in doors:
        for path in (GATEWAY / door).glob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    if parts[0] == "gateway" and len(parts) > 1 and parts[1] in doors:
                        assert parts[1] == door, f"{path} imports {node.module}"
