"""QR and other 2-D codes in a message's images and PDFs: what they say, and where they were.

A link in a QR code is invisible to every text and HTML link check: the reader's phone opens
it. Here the images a message carries (image parts, inline or attached, whatever their label
says; `data:` images in its HTML) and the pages of its PDF attachments are handed to a
decoder process (filters/qr_worker.py), bounded by [qr] in brandgate.toml: images and PDF
pages per message, pixels per image, bytes kept, and wall time per message. The decoder is
stopped when the time is up. Whatever was not decoded is named in `hits` (LIMIT_EXCEEDED),
never skipped in silence.

Only messages that carry an image or a PDF start the decoder; it stays up for the next one.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.parse import payload_kind
from filters.qr_worker import frame
from filters.types import Parsed, Payload, QrCode, QrSettings

STARTUP_SECONDS = 60.0  # the decoder's own start (imports), not charged to a message
GRACE_SECONDS = 0.5  # past a message's time, before the decoder is stopped
RETRY_SECONDS = 30.0  # after the decoder failed to start, before trying again
# data: images in HTML (also in CSS url()), base64 only: what mail clients display.
_DATA_IMAGE = re.compile(
    r"data:image/(?:png|jpe?g|gif|webp|bmp);base64,([A-Za-z0-9+/=\s]{64,})", re.IGNORECASE
)
_SETTING_KEYS = ("max_images", "max_pdf_pages", "max_image_pixels", "scan_pixels", "pdf_dpi")


@dataclass(slots=True)
class Decoded:
    """The codes of one message, the limits it crossed, and what decoding cost."""

    codes: list[QrCode] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    payloads: int = 0  # images and PDFs handed to the decoder
    seconds: float = 0.0  # wall time spent on them (decoder start not included)
    decoder_cpu: float = 0.0  # CPU seconds the decoder process reported


# --------------------------------------------------------------------------- payloads


def html_images(htmls: tuple[str, ...], room: int, max_bytes: int) -> tuple[list[Payload], bool]:
    """data: images of the HTML bodies, at most `room` of them and `max_bytes` in all;
    (payloads, whether some were left out)."""
    out: list[Payload] = []
    used = 0
    for markup in htmls:
        if "data:image" not in markup[:10_000_000].lower():
            continue
        for match in _DATA_IMAGE.finditer(markup):
            data = _b64(match.group(1))
            if payload_kind("image/any", data) != "image":
                continue
            if len(out) >= room or used + len(data) > max_bytes:
                return out, True
            used += len(data)
            out.append(Payload("image", "image", f"data: image {len(out) + 1} in the HTML", data))
    return out, False


def _b64(text: str) -> bytes:
    clean = "".join(text.split())
    clean += "=" * (-len(clean) % 4)
    try:
        return base64.b64decode(clean, validate=False)
    except (binascii.Error, ValueError):
        return b""


_URL_START = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]{1,20}://|www\.)\S+")


def code_urls(text: str) -> list[str]:
    """The web addresses in a decoded code: the whole text when it is one (the usual case),
    else the URLs inside it (a vCard's URL field, MEBKM bookmarks, a sentence)."""
    from filters.urls import text_urls

    head = text.strip()
    whole = _URL_START.match(head)
    if whole is not None and whole.end() == len(head):
        return [head]
    return text_urls(head[:4096])


def describe(payload: Payload, page: str) -> str:
    """Where a code was, as `explain` shows it: "invoice.pdf, page 1", "image qr.png"."""
    if payload.kind == "pdf":
        return f"{payload.name}, page {page}" if page else payload.name
    if payload.name.startswith("data: "):
        return payload.name
    return f"image {payload.name}"


# --------------------------------------------------------------------------- the decoder


class _Process:
    """The decoder process of this scanning process (a forked worker starts its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the scanning process that owns `proc`
        self.failed_at = 0.0
        self.memory_mb = 0
        self.buffer = b""

    def _start(self, memory_mb: int) -> subprocess.Popen[bytes] | None:
        if self.failed_at and time.monotonic() - self.failed_at < RETRY_SECONDS:
            return None
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env["BRANDGATE_QR_MEMORY_MB"] = str(memory_mb)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "filters.qr_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=root,
            )
        except OSError:
            self.failed_at = time.monotonic()
            return None
        self.proc, self.pid, self.memory_mb, self.buffer = proc, os.getpid(), memory_mb, b""
        ready = self._read(time.monotonic() + STARTUP_SECONDS)
        if ready is None or not ready.get("ready"):
            self.stop()
            self.failed_at = time.monotonic()
            return None
        self.failed_at = 0.0
        return proc

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or self.pid != os.getpid():
            return
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def forget(self) -> None:
        """In a forked child: the parent's decoder is not ours to use or stop; close our
        copies of its pipes so that it still sees the parent go."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError, ValueError):
                        os.close(pipe.fileno())

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """The next frame, or None when the decoder died or the deadline passed."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            return None
        fd = proc.stdout.fileno()
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack(">I", self.buffer[:4])[0]
                if len(self.buffer) >= 4 + size:
                    body, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    return _json(body)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk

    def run(
        self, items: list[Payload], settings: QrSettings, out: Decoded
    ) -> list[dict[str, Any] | None]:
        """One frame per item (None for an item the decoder did not finish)."""
        with self.lock:
            if self.proc is not None and (
                self.pid != os.getpid()
                or self.proc.poll() is not None
                or self.memory_mb != settings.max_memory_mb
            ):
                self.stop() if self.pid == os.getpid() else self.forget()
            proc = self.proc or self._start(settings.max_memory_mb)
            if proc is None or proc.stdin is None:
                out.hits.append("qr.decoder_failed")
                return [None] * len(items)
            start = time.monotonic()
            results: list[dict[str, Any] | None] = [None] * len(items)
            request = {
                "settings": {k: getattr(settings, k) for k in _SETTING_KEYS},
                "seconds": settings.max_seconds,
                "items": [{"kind": p.kind, "size": len(p.data)} for p in items],
            }
            deadline = start + settings.max_seconds + GRACE_SECONDS
            blobs = [frame(request), *(p.data for p in items)]
            if not _write(proc.stdin.fileno(), blobs, deadline):
                timed_out = time.monotonic() >= deadline
                self.stop()
                out.hits.append("qr.max_seconds" if timed_out else "qr.decoder_failed")
                return results
            while True:
                answer = self._read(deadline)
                if answer is None:
                    # Out of time (a page that parses for minutes) or dead: stop it; the next
                    # message starts a fresh one.
                    timed_out = time.monotonic() >= deadline
                    self.stop()
                    out.hits.append("qr.max_seconds" if timed_out else "qr.decoder_failed")
                    break
                if answer.get("done"):
                    out.decoder_cpu += float(answer.get("cpu", 0.0))
                    break
                index = answer.get("item")
                if isinstance(index, int) and 0 <= index < len(results):
                    results[index] = answer
            out.seconds += time.monotonic() - start
            return results


def _write(fd: int, blobs: list[bytes], deadline: float) -> bool:
    """Everything written before the deadline (a wedged decoder must not block the scan)."""
    try:
        for blob in blobs:
            view = memoryview(blob)
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                _, ready, _ = select.select([], [fd], [], left)
                if ready:
                    view = view[os.write(fd, view[: 1 << 16]) :]
    except (OSError, ValueError):
        return False
    return True


def _json(body: bytes) -> dict[str, Any] | None:
    import json

    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_PROCESS = _Process()
os.register_at_fork(after_in_child=_PROCESS.forget)
atexit.register(_PROCESS.stop)


def decode(parsed: Parsed, settings: QrSettings) -> Decoded:
    """The codes in the message's images and PDF pages. Never raises."""
    out = Decoded()
    if not settings.enabled:
        return out
    try:
        room = settings.max_images * 4 - sum(1 for p in parsed.payloads if p.kind == "image")
        used = sum(len(p.data) for p in parsed.payloads)
        inline, cut = html_images(parsed.htmls, max(0, room), settings.max_bytes - used)
        if cut:
            out.hits.append("qr.max_images" if len(inline) >= room else "qr.max_bytes")
        items = [*parsed.payloads, *inline]
        if not items:
            return out
        out.payloads = len(items)
        for payload, answer in zip(items, _PROCESS.run(items, settings, out), strict=True):
            if answer is None:
                continue
            out.hits.extend(str(h) for h in answer.get("hits", ()))
            for code in answer.get("codes", ()):
                text = str(code.get("text", ""))
                source = describe(payload, str(code.get("page", "")))
                out.codes.append(QrCode(text, str(code.get("format", "")), source))
    except Exception:  # decoding is evidence, never a reason for the scan to fail
        out.hits.append("qr.decoder_failed")
    out.hits = list(dict.fromkeys(out.hits))
    return out


def shutdown() -> None:
    """Stop this process's decoder (tests, and front doors that reload)."""
    with _PROCESS.lock:
        _PROCESS.stop()
