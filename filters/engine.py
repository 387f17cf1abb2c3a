"""The one function from bytes to Verdict, shared by `scan`, `replay` and the SMTP gateway.

parse(bytes) -> Parsed -> extract -> Features -> claim -> BrandClaim | None
  -> run_checks -> findings -> score -> decide -> Verdict
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.loader import Config, load_config
from filters import auth
from filters.checks import run_checks
from filters.claim import find_claim
from filters.context import Context
from filters.explain import summarise
from filters.features import extract, with_qr
from filters.parse import parse
from filters.qr import submit as decode_codes
from filters.scoring import decide, score
from filters.types import AuthResult, BrandClaim, Envelope, Features, Finding, Parsed, Verdict

log = logging.getLogger(__name__)

# dkimpy's dnsfunc shape: name (bytes or str) -> TXT record text (bytes), or b"" when none.
DnsFunc = Callable[..., bytes]


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the engine worked out for one message (for `explain` and tests)."""

    parsed: Parsed
    features: Features
    claim: BrandClaim | None
    findings: tuple[Finding, ...]
    verdict: Verdict


class Engine:
    def __init__(self, config: Config, dns: DnsFunc | None = None) -> None:
        self.config = config
        self.dns = dns
        self.context = Context(
            registry=config.registry,
            lists=config.lists,
            lexicon=config.lexicon,
            limits=config.limits,
            access=config.access,
            marketplace=config.marketplace,
        )

    @classmethod
    def from_path(cls, path: Path | str | None = None, dns: DnsFunc | None = None) -> Engine:
        return cls(load_config(path), dns)

    def _dkim(self, raw: bytes) -> tuple[AuthResult, ...] | None:
        """Our own DKIM results; None when verification is off (or there is no resolver)."""
        if not self.config.engine.verify_dkim or self.dns is None:
            return None
        return auth.verify_dkim(raw, self.dns, self.config.limits)

    def analyse(self, raw: bytes, envelope: Envelope | None = None) -> Analysis:
        cfg = self.config
        parsed = parse(raw, cfg.limits, cfg.qr)
        # The decoder process works on the images and PDFs while this one does the rest: the
        # whole judgement, on the features without codes. Most images hold none, and then
        # that judgement stands; a code or a decoding limit means judging again with them.
        codes = decode_codes(parsed, cfg.qr)
        early: Analysis | None = None
        try:
            dkim = self._dkim(raw)
            features = extract(
                parsed,
                envelope=envelope,
                trusted_authserv_ids=cfg.engine.trusted_authserv_ids,
                lists=cfg.lists,
                limits=cfg.limits,
                dkim_results=dkim or (),
            )
            if codes.waiting:
                early = self._judge(parsed, features, dkim)
        finally:
            decoded = codes.result()
        if early is not None and not decoded.codes and not decoded.hits:
            return early
        return self._judge(parsed, with_qr(features, decoded, cfg.lists, cfg.limits), dkim)

    def _judge(
        self, parsed: Parsed, features: Features, dkim: tuple[AuthResult, ...] | None
    ) -> Analysis:
        cfg = self.config
        claim = find_claim(features, self.context)
        findings = run_checks(features, claim, self.context)
        total, scored = score(findings, cfg, claimed=claim is not None)
        verdict_name = decide(total, cfg.thresholds)
        verdict = Verdict(
            verdict=verdict_name,
            score=total,
            brand=claim,
            findings=scored,
            summary=summarise(verdict_name, features, claim, scored),
            dkim=dkim,
        )
        return Analysis(parsed, features, claim, findings, verdict)

    def scan(self, raw: bytes, envelope: Envelope | None = None) -> Verdict:
        """Never raises: an internal error gives status "error" and the caller's fallback."""
        try:
            return self.analyse(raw, envelope).verdict
        except MemoryError:
            raise  # the memory budget is the scan worker's to enforce: an overrun, not a bug
        except Exception as exc:  # a bug must not lose the message; say so and move on
            log.exception("scan failed")
            return Verdict.for_error(exc)
