"""The data that flows through the pipeline: bytes -> Parsed -> Features -> findings -> Verdict.

Everything here is frozen: a stage never edits what an earlier stage produced, so every stage
can be tested on hand-made values and the same objects can be shared across checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERDICTS: tuple[str, ...] = ("pass", "tag", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class Limits:
    """Explicit bounds on the work one message may cause. Crossing one is a finding."""

    max_message_bytes: int = 25 * 1024 * 1024
    max_part_bytes: int = 2 * 1024 * 1024  # decoded bytes of one part kept for analysis
    max_mime_depth: int = 20
    max_parts: int = 250
    max_links: int = 500
    max_text_chars: int = 300_000  # normalised body text kept for matching
    # The top-level header block: bytes and fields read. Past either, the first fields are
    # read and so is every field that decides a verdict (From, Subject, ...), wherever it is.
    max_header_bytes: int = 1024 * 1024
    max_headers: int = 1000
    max_encoded_words: int = 10_000  # RFC 2047 words decoded per message
    # RFC 1035: no DNS name is longer, so no link can open a longer host.
    max_host_chars: int = 253
    max_host_labels: int = 127
    max_word_chars: int = 64  # a word of the From display name, for fuzzy brand matching
    # The Subject and the From display name are read (and matched) up to this many characters.
    max_subject_chars: int = 2000
    # The budget of one scan, beside engine.scan_timeout: the address space a scan worker may
    # add to what it holds once its engine is built, and what a message that overruns either
    # gets: "tag", "quarantine" or "tempfail" (451 from the gateway). Never an unscanned pass.
    worker_memory_mb: int = 1024
    on_overrun: str = "tempfail"


OVERRUN_ACTIONS: tuple[str, ...] = ("tag", "quarantine", "tempfail")


@dataclass(frozen=True, slots=True)
class QrSettings:
    """Bounds on decoding QR and other 2-D codes in images and PDF pages ([qr] in
    brandgate.toml). Crossing one is a limit hit named "qr.<field>", never a hang."""

    enabled: bool = True
    max_images: int = 20  # images decoded per message (tiny ones, which hold no code, skipped)
    max_pdf_pages: int = 5  # PDF pages rendered per message, over all its PDFs
    max_image_pixels: int = 16_000_000  # larger images (and PDF images) are not decoded
    scan_pixels: int = 2_000_000  # images and pages are scaled to at most this for decoding
    max_bytes: int = 8 * 1024 * 1024  # image and PDF bytes kept per message for decoding
    max_seconds: float = 2.0  # wall time per message; the decoder process is stopped after it
    pdf_dpi: int = 100  # rendering resolution of PDF pages (before the scan_pixels cap)
    max_memory_mb: int = 1024  # address space of the decoder process


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf of the MIME tree, as metadata (decoded text lives in Parsed.texts/htmls)."""

    content_type: str  # lower-case "type/subtype"
    charset: str | None
    filename: str | None
    disposition: str | None  # "inline", "attachment" or None
    size: int  # decoded bytes
    depth: int  # 0 for a single-part message


@dataclass(frozen=True, slots=True)
class Payload:
    """The decoded bytes of a part that may carry a QR or other 2-D code (an image or a PDF),
    kept only when code decoding is on and within its byte and count caps."""

    kind: str  # "image" or "pdf"
    content_type: str
    name: str  # filename, else "cid:<content-id>", else the content type
    data: bytes


@dataclass(frozen=True, slots=True)
class Parsed:
    """A message after defensive parsing. Header values are RFC 2047-decoded str."""

    headers: tuple[tuple[str, str], ...]  # top-level headers, in order, names as found
    texts: tuple[str, ...]  # decoded text/plain bodies (inline), in tree order
    htmls: tuple[str, ...]  # decoded text/html bodies (inline and attached), in tree order
    parts: tuple[Part, ...]
    defects: tuple[str, ...]  # parser defects, by class name or short text
    limit_hits: tuple[str, ...]  # names of Limits fields that were crossed
    size: int  # raw bytes
    payloads: tuple[Payload, ...] = ()  # images and PDFs for code decoding (filters/qr.py)

    def header(self, name: str) -> str | None:
        """First header of that name (case-insensitive), or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        low = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == low)


@dataclass(frozen=True, slots=True)
class Address:
    display: str  # display name, decoded; "" when absent
    address: str  # local@domain, domain lower-cased; "" when unparseable
    local: str
    domain: str  # lower-case ASCII (punycode kept), "" when absent
    registrable: str  # eTLD+1 of domain from the bundled suffix list, "" when none
    limit_hit: str | None = None  # as Link.limit_hit: the domain was cut to fit RFC 1035


@dataclass(frozen=True, slots=True)
class Link:
    url: str  # as found, after HTML/transfer decoding
    scheme: str  # lower-case, "" for a bare "www." link
    host: str  # lower-case ASCII (punycode kept for matching); IP literals as text
    host_unicode: str  # IDNA-decoded for display
    registrable: str  # eTLD+1 (ASCII); the IP itself for an IP literal; "" when none
    shown: str | None  # visible text / alt text / title, whitespace-collapsed
    where: str  # "html-a", "html-img", "html-form", "html-area", "text", "qr"
    is_ip: bool = False
    has_userinfo: bool = False  # http://user@host/ tricks
    redirect_to: str | None = None  # target URL carried in a redirect parameter, decoded
    # The Limits field crossed reading this link ("max_host_chars", "max_host_labels"): its
    # host (or its redirect target's) was longer than any DNS name, and was cut to fit.
    limit_hit: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One method result from an Authentication-Results header of a trusted authserv-id,
    or from our own DKIM verification (authserv_id "brandgate")."""

    authserv_id: str
    method: str  # "dkim", "spf", "dmarc", "arc"
    result: str  # "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"
    domain: str  # header.d / header.i domain for dkim, smtp.mailfrom domain for spf,
    # header.from for dmarc; lower-case, "" when absent


@dataclass(frozen=True, slots=True)
class QrCode:
    """A QR or other 2-D code decoded from an image or a PDF page of the message."""

    text: str  # the decoded content, capped
    format: str  # "QRCode", "DataMatrix", "Aztec", "PDF417", ...
    source: str  # where it was, for a reader: "invoice.pdf, page 1", "image qr.png"


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    client_ip: str | None = None
    helo: str | None = None


@dataclass(frozen=True, slots=True)
class Features:
    """What the checks look at. Built once per message by filters.features.extract."""

    from_addr: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    return_path: Address | None  # envelope sender if known, else Return-Path header
    subject: str  # decoded
    # Text for matching: NFKC, zero-width removed, confusables folded, lower-case,
    # whitespace collapsed. `body` is text/plain plus the visible text of HTML.
    subject_norm: str
    display_norm: str  # From display name, normalised the same way
    body: str
    links: tuple[Link, ...]
    image_alts: tuple[str, ...]  # normalised alt/title texts of images
    dkim_domains: tuple[str, ...]  # d= of every DKIM-Signature header (unverified claims)
    auth: tuple[AuthResult, ...]  # trusted results only (ours and trusted authserv-ids)
    attachments: tuple[Part, ...]  # parts with a filename or disposition attachment
    has_html: bool
    defects: tuple[str, ...]
    limit_hits: tuple[str, ...]
    envelope: Envelope = field(default_factory=Envelope)
    list_headers: bool = False  # List-Id / List-Unsubscribe present (bulk mail from a list)
    # Distributed by a mailing list (List-Id, List-Post, X-BeenThere, Mailing-List): the list
    # rewrites the envelope and Reply-To, and its members link wherever they like.
    mailing_list: bool = False
    # The domain of the Message-ID ("<x@mail.example.com>" -> "mail.example.com"), lower-case,
    # "" when absent: the software that wrote the message names its host there.
    message_id_domain: str = ""
    # QR and other 2-D codes decoded from images and PDF pages; their URLs are in `links`
    # with where = "qr".
    qr_codes: tuple[QrCode, ...] = ()
    # The top-level headers as parsed (the same tuple as Parsed.headers, not a copy), for
    # checks that match admin-configured header names (the marketplace relay profile).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BrandClaim:
    """The brand a message presents itself as, and where it says so."""

    brand: str  # registry key, e.g. "amazon"
    name: str  # display name of the brand, e.g. "Amazon"
    where: tuple[str, ...]  # "display-name", "from-local-part", "subject", "img-alt",
    # "link-text", "body"
    matched: tuple[str, ...]  # the tokens that matched, after confusable folding
    strength: float  # 0..1: how clearly the message speaks *as* the brand


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # stable id, UPPER_SNAKE, e.g. "BRAND_SENDER_UNVERIFIED"
    evidence: tuple[str, ...]  # human-readable, each a short sentence or fragment
    factor: float = 1.0  # 0..1 (negative rules use a negative weight); score = factor * weight


@dataclass(frozen=True, slots=True)
class ScoredFinding:
    rule: str
    group: str
    score: float  # after weight and group cap
    evidence: tuple[str, ...]
    description: str
    # How the score came about, for `explain`: factor x weight (x scale without a claim),
    # then the group cap's share.
    factor: float = 1.0
    weight: float = 0.0
    unclaimed: float = 1.0  # scale applied because no brand was claimed (1.0 = none)
    capped: float = 1.0  # the group cap's scale (1.0 = not capped)


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # one of VERDICTS
    score: float
    brand: BrandClaim | None
    findings: tuple[ScoredFinding, ...]
    summary: str  # one human sentence
    status: str = "ok"  # "ok", or "error" when scanning failed and a fallback was used
    error: str | None = None
    # Our own DKIM verification, one result per signature; None when it did not run.
    dkim: tuple[AuthResult, ...] | None = None

    @classmethod
    def for_error(cls, exc: BaseException) -> Verdict:
        """What a front door reports when scanning itself failed (its fallback decides)."""
        return cls(
            verdict="pass",
            score=0.0,
            brand=None,
            findings=(),
            summary=f"Not scanned: internal error ({type(exc).__name__}).",
            status="error",
            error=f"{type(exc).__name__}: {exc}",
        )

    @classmethod
    def for_overrun(cls, reason: str, on_overrun: str) -> Verdict:
        """A message whose scan crossed its budget (time, memory, or its worker died): a
        verdict of its own, as limits.on_overrun says, never a pass. "tempfail" reads as
        quarantine where nothing can be deferred (scan, replay, a release)."""
        return cls(
            verdict="tag" if on_overrun == "tag" else "quarantine",
            score=0.0,
            brand=None,
            findings=(
                ScoredFinding(
                    "LIMIT_EXCEEDED",
                    "structure",
                    0.0,
                    (f"scan budget crossed: {reason}",),
                    "The scan crossed its time or memory budget; the message was not judged",
                ),
            ),
            summary=f"Not judged: the scan crossed its budget ({reason}).",
            status="overrun",
            error=reason,
        )

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(f.rule for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: the one shape used by jsonl output, logs and the quarantine."""
        return {
            "verdict": self.verdict,
            "score": round(self.score, 2),
            "brand": self.brand.name if self.brand else None,
            "brand_key": self.brand.brand if self.brand else None,
            "claim_where": list(self.brand.where) if self.brand else [],
            "claim_matched": list(self.brand.matched) if self.brand else [],
            "summary": self.summary,
            "status": self.status,
            "error": self.error,
            "findings": [
                {
                    "rule": f.rule,
                    "group": f.group,
                    "score": round(f.score, 2),
                    "factor": f.factor,
                    "weight": f.weight,
                    "evidence": list(f.evidence),
                }
                for f in self.findings
            ],
        }
