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
import hashlib
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.parse import payload_kind
from filters.qr_worker import frame
from filters.types import Parsed, Payload, QrCode, QrSettings

STARTUP_SECONDS = 60.0  # the decoder's own start (imports), not charged to a message
GRACE_SECONDS = 0.5  # past a message's time, before the decoder is stopped
RETRY_SECONDS = 30.0  # after the decoder failed to start, before trying again
# data: images in HTML (also in CSS url()), base64 only: what mail clients display. The
# pattern starts at the colon, a literal the regex engine skips to: a case-blind pattern
# would be tried at every character of every HTML body, ten times slower. The "data" before
# the colon is checked on each match instead.
_DATA_IMAGE = re.compile(r":(?i:image/(?:png|jpe?g|gif|webp|bmp);base64,)([A-Za-z0-9+/=\s]{64,})")
_SETTING_KEYS = ("max_images", "max_pdf_pages", "max_image_pixels", "scan_pixels", "pdf_dpi")
CACHE_ENTRIES = 1024  # decoded payloads remembered by content (logos, campaign images repeat)
# Hits that depend on the rest of the message, not on the payload: such answers are not cached.
_MESSAGE_HITS = frozenset({"qr.max_images", "qr.max_pdf_pages", "qr.max_seconds"})


@dataclass(slots=True)
class Decoded:
    """The codes of one message, the limits it crossed, and what decoding cost."""

    codes: list[QrCode] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    payloads: int = 0  # images and PDFs handed to the decoder (not those found in the cache)
    seconds: float = 0.0  # wall time spent on them (decoder start not included)
    decoder_cpu: float = 0.0  # CPU seconds the decoder process reported
    decoder_rss_mb: float = 0.0  # the decoder process's peak resident memory so far


# --------------------------------------------------------------------------- payloads


def html_images(htmls: tuple[str, ...], room: int, max_bytes: int) -> tuple[list[Payload], bool]:
    """data: images of the HTML bodies, at most `room` of them and `max_bytes` in all;
    (payloads, whether some were left out)."""
    out: list[Payload] = []
    used = 0
    for markup in htmls:
        for match in _DATA_IMAGE.finditer(markup):
            if markup[max(0, match.start() - 4) : match.start()].lower() != "data":
                continue
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
        copies of its pipes so that it still sees the parent go. The lock may have been held
        by another thread of the parent at the fork: the child gets a fresh one."""
        self.lock = threading.Lock()
        proc, self.proc = self.proc, None
        self.buffer = b""
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError, ValueError):
                        pipe.close()

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

    def send(self, items: list[Payload], settings: QrSettings, out: Decoded) -> _Job:
        """Hand the items to the decoder and return at once; the caller then does its own
        work while the decoder (another process, another core) decodes, and ends with
        `receive`. Holds the lock from here to there: one message at a time."""
        self.lock.acquire()
        try:
            return self._send(items, settings, out)
        except BaseException:
            self.lock.release()
            raise

    def _send(self, items: list[Payload], settings: QrSettings, out: Decoded) -> _Job:
        job = _Job(items, time.monotonic(), settings.max_seconds + GRACE_SECONDS)
        if self.proc is not None and (
            self.pid != os.getpid()
            or self.proc.poll() is not None
            or self.memory_mb != settings.max_memory_mb
        ):
            if self.pid == os.getpid():
                self.stop()
            else:  # inherited (the fork handler closed our copies of its pipes)
                self.proc = None
        proc = self.proc or self._start(settings.max_memory_mb)
        if proc is None or proc.stdin is None:
            out.hits.append("qr.decoder_failed")
            job.sent = False
            return job
        job.start = time.monotonic()  # the decoder's own start is not the message's time
        request = {
            "settings": {k: getattr(settings, k) for k in _SETTING_KEYS},
            "seconds": settings.max_seconds,
            "items": [{"kind": p.kind, "size": len(p.data)} for p in items],
        }
        if not _write(proc.stdin.fileno(), [frame(request), *(p.data for p in items)], job.end):
            self._fail(job, out)
        return job

    def receive(self, job: _Job, out: Decoded) -> list[dict[str, Any] | None]:
        """One answer per item (None for an item the decoder did not finish)."""
        try:
            while job.sent:
                answer = self._read(job.end)
                if answer is None:
                    # Out of time (a page that parses for minutes) or dead: stop it; the next
                    # message starts a fresh one.
                    self._fail(job, out)
                    break
                if answer.get("done"):
                    out.decoder_cpu += float(answer.get("cpu", 0.0))
                    out.decoder_rss_mb = float(answer.get("rss_mb", 0.0))
                    break
                index = answer.get("item")
                if isinstance(index, int) and 0 <= index < len(job.results):
                    job.results[index] = answer
            out.seconds += time.monotonic() - job.start
            return job.results
        finally:
            self.lock.release()

    def _fail(self, job: _Job, out: Decoded) -> None:
        timed_out = time.monotonic() >= job.end
        self.stop()
        out.hits.append("qr.max_seconds" if timed_out else "qr.decoder_failed")
        job.sent = False


@dataclass(slots=True)
class _Job:
    items: list[Payload]
    start: float
    budget: float  # seconds from `start` before the decoder is stopped
    sent: bool = True
    results: list[dict[str, Any] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)

    @property
    def end(self) -> float:
        return self.start + self.budget


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


class _Cache:
    """Answers by payload content and settings, least recently used out first. A payload seen
    before costs no decoding, so it does not count against the message's image and page caps
    either (which bound work): only when a message crosses those caps can its codes depend on
    what came before."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[bytes, dict[str, Any]] = OrderedDict()

    @staticmethod
    def key(payload: Payload, settings: QrSettings) -> bytes:
        h = hashlib.sha256(payload.kind.encode())
        h.update(repr([getattr(settings, k) for k in _SETTING_KEYS]).encode())
        h.update(payload.data)
        return h.digest()

    def get(self, key: bytes) -> dict[str, Any] | None:
        with self.lock:
            answer = self.entries.get(key)
            if answer is not None:
                self.entries.move_to_end(key)
            return answer

    def put(self, key: bytes, answer: dict[str, Any]) -> None:
        if _MESSAGE_HITS.intersection(answer.get("hits", ())):
            return
        with self.lock:
            self.entries[key] = answer
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_PROCESS = _Process()
_CACHE = _Cache()


def _after_fork() -> None:
    _PROCESS.forget()
    _CACHE.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_PROCESS.stop)


@dataclass(slots=True)
class Stats:
    """What decoding cost this process so far (for benchmarks and metrics)."""

    messages: int = 0  # messages that carried an image or a PDF
    payloads: int = 0  # images and PDFs seen
    decoded: int = 0  # of them, handed to the decoder (the rest came from the cache)
    codes: int = 0
    seconds: float = 0.0  # wall time from handing them over to having the answers
    decoder_cpu: float = 0.0
    decoder_rss_mb: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)


STATS = Stats()


def _count(items: int, out: Decoded) -> None:
    STATS.messages += 1
    STATS.payloads += items
    STATS.decoded += out.payloads
    STATS.codes += len(out.codes)
    STATS.seconds += out.seconds
    STATS.decoder_cpu += out.decoder_cpu
    STATS.decoder_rss_mb = max(STATS.decoder_rss_mb, out.decoder_rss_mb)
    for hit in out.hits:
        STATS.hits[hit] = STATS.hits.get(hit, 0) + 1


def reset_stats() -> None:
    global STATS
    STATS = Stats()


class Pending:
    """Decoding under way for one message; `result()` waits for it (and must be called:
    until then this process's decoder is reserved for this message)."""

    def __init__(self, settings: QrSettings) -> None:
        self.settings = settings
        self.out = Decoded()
        self.items: list[Payload] = []
        self.answers: list[dict[str, Any] | None] = []
        self.keys: list[bytes] = []
        self.todo: list[int] = []
        self.job: _Job | None = None
        self.done = False

    def start(self, parsed: Parsed) -> None:
        self.items = _payloads(parsed, self.settings, self.out)
        self.keys = [_CACHE.key(p, self.settings) for p in self.items]
        self.answers = [_CACHE.get(k) for k in self.keys]
        self.todo = [i for i, a in enumerate(self.answers) if a is None]
        if self.todo:
            self.out.payloads = len(self.todo)
            todo = [self.items[i] for i in self.todo]
            self.job = _PROCESS.send(todo, self.settings, self.out)

    @property
    def waiting(self) -> bool:
        """Whether the decoder is at work on this message (False: no payloads, all cached)."""
        return self.job is not None and not self.done

    def result(self) -> Decoded:
        if self.done:
            return self.out
        self.done = True
        out = self.out
        try:
            if self.job is not None:
                fresh = _PROCESS.receive(self.job, out)
                for i, answer in zip(self.todo, fresh, strict=True):
                    self.answers[i] = answer
                    if answer is not None:
                        _CACHE.put(self.keys[i], answer)
            for payload, answer in zip(self.items, self.answers, strict=True):
                if answer is not None:
                    _take(payload, answer, out)
        except Exception:  # decoding is evidence, never a reason for the scan to fail
            out.hits.append("qr.decoder_failed")
        out.hits = list(dict.fromkeys(out.hits))
        if self.items:
            _count(len(self.items), out)
        return out


def submit(parsed: Parsed, settings: QrSettings) -> Pending:
    """Start decoding the codes in the message's images and PDF pages. Never raises."""
    pending = Pending(settings)
    if settings.enabled:
        try:
            pending.start(parsed)
        except Exception:
            pending.out.hits.append("qr.decoder_failed")
    return pending


def decode(parsed: Parsed, settings: QrSettings) -> Decoded:
    """The codes in the message's images and PDF pages, waited for. Never raises."""
    return submit(parsed, settings).result()


def _payloads(parsed: Parsed, settings: QrSettings, out: Decoded) -> list[Payload]:
    """The parts parse kept, then the data: images of the HTML, within the same caps."""
    room = settings.max_images * 4 - sum(1 for p in parsed.payloads if p.kind == "image")
    used = sum(len(p.data) for p in parsed.payloads)
    inline, cut = html_images(parsed.htmls, max(0, room), settings.max_bytes - used)
    if cut:
        out.hits.append("qr.max_images" if len(inline) >= room else "qr.max_bytes")
    return [*parsed.payloads, *inline]


def _take(payload: Payload, answer: dict[str, Any], out: Decoded) -> None:
    out.hits.extend(str(h) for h in answer.get("hits", ()))
    for code in answer.get("codes", ()):
        text = str(code.get("text", ""))
        source = describe(payload, str(code.get("page", "")))
        out.codes.append(QrCode(text, str(code.get("format", "")), source))


def shutdown() -> None:
    """Stop this process's decoder and forget what it decoded (tests, benchmarks)."""
    with _PROCESS.lock:
        _PROCESS.stop()
    _CACHE.clear()


def clear_cache() -> None:
    _CACHE.clear()
