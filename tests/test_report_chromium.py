"""The replay report rendered by a real browser (headless Chromium): it shows the histogram and
the rule table, and loading it makes no request but the page itself -- even with hostile text in
the messages that tries to pull in scripts, images and style sheets from the serving host."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.archives import replay
from gateway.archives.report import render
from tests.test_replay import run_fake, write_msg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium not installed (scripts/system-deps installs it when run as root)",
    ),
]


class _Server:
    """A loopback HTTP server for one folder that records every request path."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        log = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send_head(self) -> Any:
                log.append(self.path)
                return super().send_head()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _hostile(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return (
        f'<script src="{base}/evil.js"></script><img src="{base}/evil.png">'
        f'<link rel="stylesheet" href="{base}/evil.css"><style>@import "{base}/i.css";</style>'
        f'"><svg onload=alert(1)><image href="{base}/evil.svg"/></svg>'
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Server, Path, dict[str, Any]]]:
    site = tmp_path / "site"
    site.mkdir()
    with _Server(site) as server:
        box = tmp_path / "box"
        write_msg(box / "phish" / "p1.eml", 9, "RULE_A,RULE_B")
        write_msg(box / "phish" / "p2.eml", 1, "RULE_B")
        write_msg(box / "ham" / "h1.eml", 0)
        write_msg(box / "ham" / "h2.eml", 5, "RULE_B")
        doc = run_fake([str(box)], replay.FolderLabels(["phish", "ham"]))
        hostile = _hostile(server.port)
        for block in ("false_positives", "false_negatives"):
            for entry in doc[block]["shown"]:
                entry["summary"] = hostile
                entry["brand"] = hostile
                entry["source"] = hostile
        (site / "report.html").write_text(render(doc), encoding="utf-8")
        yield server, site, doc


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


def test_page_has_no_external_references(served: tuple[_Server, Path, dict[str, Any]]) -> None:
    _, site, _ = served
    page = (site / "report.html").read_text()
    dom = _parse(page)
    for tag, attrs in dom.tags:
        assert tag not in ("script", "img", "iframe", "object", "embed"), tag
        for name in ("src", "href", "action", "xlink:href", "data", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
    assert "url(" not in page.lower()


def test_chromium_renders_histogram_and_rule_table_without_requests(
    served: tuple[_Server, Path, dict[str, Any]], tmp_path: Path
) -> None:
    server, _site, _doc = served
    url = f"http://127.0.0.1:{server.port}/report.html"
    proc = _chromium(tmp_path, "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _parse(proc.stdout)
    classes = [(tag, a.get("class") or "") for tag, a in dom.tags]
    assert sum(1 for t, c in classes if t == "svg" and "histogram" in c) == 2  # phish, ham
    assert any(t == "svg" and "pr-curve" in c for t, c in classes)
    assert any(t == "table" and "rules" in c for t, c in classes)
    text = " ".join(dom.text)
    assert "RULE_A" in text and "RULE_NEVER" in text
    assert "evil.js" in text  # the hostile summary is shown as text
    assert not any(t == "script" for t, _ in dom.tags)
    # Only the page itself was fetched: no script, image, style sheet, font or favicon.
    assert server.requests == ["/report.html"]

    shot = tmp_path / "report.png"  # for a person to look at: BRANDGATE_KEEP_SCREENSHOT=path
    proc = _chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", url)
    assert proc.returncode == 0 and shot.stat().st_size > 10_000
    keep = os.environ.get("BRANDGATE_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    assert server.requests == ["/report.html"] * 2
