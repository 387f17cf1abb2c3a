"""DKIM verification (filters.auth.verify_dkim) and the production TXT lookup (gateway.dns).

Keys are made here (pure Python RSA, seeded so every run signs with the same key), messages
are signed with dkimpy, and keys are served by a dict or by a real DNS server on loopback.
"""

from __future__ import annotations

import base64
import pickle
import random
from collections.abc import Callable, Iterator

import dkim
import pytest

from filters.auth import MAX_SIGNATURES, DnsTempError, verify_dkim
from filters.types import AuthResult, Limits
from gateway.dns import TxtLookup, init_worker, make_txt_lookup, worker_lookup
from tests.dnsserver import LoopbackDns

LIMITS = Limits()

# --------------------------------------------------------------------------- keys


def _is_probable_prime(n: int, rng: random.Random) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random, e: int) -> int:
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if n % e != 1 and _is_probable_prime(n, rng):
            return n


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _der_int(n: int) -> bytes:
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def rsa_keypair(seed: int, bits: int = 1024) -> tuple[bytes, bytes]:
    """(PEM PKCS#1 private key, DNS key record) for a seeded RSA key."""
    rng = random.Random(seed)
    e = 65537
    p = _prime(bits // 2, rng, e)
    q = _prime(bits // 2, rng, e)
    n, phi = p * q, (p - 1) * (q - 1)
    d = pow(e, -1, phi)
    fields = [0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)]
    private = _der(0x30, b"".join(_der_int(x) for x in fields))
    b64 = base64.b64encode(private)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    pem = b"\n".join(
        [b"-----BEGIN RSA PRIVATE KEY-----", *lines, b"-----END RSA PRIVATE KEY-----\n"]
    )
    rsa_oid = _der(0x06, bytes.fromhex("2a864886f70d010101"))
    spki = _der(
        0x30,
        _der(0x30, rsa_oid + _der(0x05, b""))
        + _der(0x03, b"\x00" + _der(0x30, _der_int(n) + _der_int(e))),
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)


BRAND_KEY, BRAND_RECORD = rsa_keypair(1)
ESP_KEY, ESP_RECORD = rsa_keypair(2)

MESSAGE = (
    b"From: Example Shop <news@shop.example.com>\r\n"
    b"To: someone@example.org\r\n"
    b"Subject: Your order has shipped\r\n"
    b"Date: Thu, 01 Aug 2024 10:00:00 +0000\r\n"
    b"Message-ID: <abc@shop.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Your parcel is on its way.\r\n"
)


def sign(message: bytes, selector: bytes, domain: bytes, key: bytes, **kw: object) -> bytes:
    sig = dkim.sign(
        message, selector, domain, key, include_headers=[b"from", b"to", b"subject"], **kw
    )
    return sig + message


def dict_dns(records: dict[str, bytes]) -> Callable[..., bytes]:
    def lookup(name: bytes | str, timeout: float = 5) -> bytes:
        key = name.decode() if isinstance(name, bytes) else name
        return records.get(key.rstrip(".").lower(), b"")

    return lookup


LONG_RECORD = b"v=DKIM1; k=rsa; p=" + b"A" * 600

KEYS = {
    "s1._domainkey.shop.example.com": BRAND_RECORD,
    "esp._domainkey.esp.example.net": ESP_RECORD,
}


def result(message: bytes, dns: Callable[..., bytes] | None = None) -> tuple[AuthResult, ...]:
    return verify_dkim(message, dns or dict_dns(KEYS), LIMITS)


# --------------------------------------------------------------------------- verify_dkim


def test_good_signature_passes() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    assert result(signed) == (AuthResult("brandgate", "dkim", "pass", "shop.example.com"),)


def test_tampered_body_fails() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    tampered = signed.replace(b"on its way", b"held: pay the customs fee at http://x.test")
    assert [r.result for r in result(tampered)] == ["fail"]


def test_tampered_signed_header_fails() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    tampered = signed.replace(b"Subject: Your order", b"Subject: Claim your gift")
    assert [r.result for r in result(tampered)] == ["fail"]


def test_signature_by_another_key_fails() -> None:
    # The d= domain publishes one key; the message was signed with another.
    signed = sign(MESSAGE, b"s1", b"shop.example.com", ESP_KEY)
    assert [r.result for r in result(signed)] == ["fail"]


def test_missing_key_is_permerror() -> None:
    signed = sign(MESSAGE, b"gone", b"shop.example.com", BRAND_KEY)
    assert result(signed) == (AuthResult("brandgate", "dkim", "permerror", "shop.example.com"),)


def test_bad_key_record_is_permerror() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    broken = {"s1._domainkey.shop.example.com": b"v=DKIM1; k=rsa; p=AAAAnotakey"}
    assert [r.result for r in result(signed, dict_dns(broken))] == ["permerror"]


def test_malformed_signature_is_permerror() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    broken = signed.replace(b"a=rsa-sha256", b"a=rsa-md5", 1)
    assert result(broken) == (AuthResult("brandgate", "dkim", "permerror", "shop.example.com"),)


def test_signature_without_domain_is_permerror() -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; s=x; bh=AAAA; b=AAAA; h=from\r\n" + MESSAGE
    assert result(message) == (AuthResult("brandgate", "dkim", "permerror", ""),)


def test_dns_temp_failure_is_temperror_not_fail() -> None:
    def down(name: bytes | str, timeout: float = 5) -> bytes:
        raise DnsTempError("SERVFAIL")

    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    assert result(signed, down) == (
        AuthResult("brandgate", "dkim", "temperror", "shop.example.com"),
    )


def test_any_dns_exception_is_temperror() -> None:
    def broken(name: bytes | str, timeout: float = 5) -> bytes:
        raise TimeoutError("resolver timed out")

    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    assert [r.result for r in result(signed, broken)] == ["temperror"]


def test_brand_and_esp_signatures_give_two_results() -> None:
    once = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    twice = sign(once, b"esp", b"esp.example.net", ESP_KEY)
    assert result(twice) == (
        AuthResult("brandgate", "dkim", "pass", "esp.example.net"),
        AuthResult("brandgate", "dkim", "pass", "shop.example.com"),
    )


def test_one_good_one_broken_signature() -> None:
    once = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    twice = sign(once, b"nokey", b"esp.example.net", ESP_KEY)
    assert [(r.domain, r.result) for r in result(twice)] == [
        ("esp.example.net", "permerror"),
        ("shop.example.com", "pass"),
    ]


def test_dns_outage_stops_asking_after_a_few_failures() -> None:
    calls: list[bytes] = []

    def down(name: bytes | str, timeout: float = 5) -> bytes:
        calls.append(name if isinstance(name, bytes) else name.encode())
        raise DnsTempError("timeout")

    message = MESSAGE
    for i in range(4):
        message = sign(message, f"s{i}".encode(), f"d{i}.example.com".encode(), BRAND_KEY)
    results = result(message, down)
    assert [r.result for r in results] == ["temperror"] * 4
    assert len(calls) == 2  # MAX_DNS_FAILURES: an outage costs two timeouts, not four


def test_number_of_signatures_is_capped() -> None:
    message = MESSAGE
    for _ in range(MAX_SIGNATURES + 3):
        message = sign(message, b"s1", b"shop.example.com", BRAND_KEY)
    results = result(message)
    assert len(results) == MAX_SIGNATURES
    assert {r.result for r in results} == {"pass"}


def test_unsigned_message_gives_nothing() -> None:
    assert result(MESSAGE) == ()


def test_message_over_size_limit_is_skipped() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    assert verify_dkim(signed, dict_dns(KEYS), Limits(max_message_bytes=100)) == ()


def test_garbage_never_raises() -> None:
    for raw in (b"", b"\x00\xff" * 50, b"DKIM-Signature: \r\n\r\n", b"DKIM-Signature: d=\xff\r\n"):
        assert isinstance(verify_dkim(raw, dict_dns(KEYS), LIMITS), tuple)


def test_unparseable_header_block_still_reports_signatures() -> None:
    signed = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    broken = signed.replace(b"To: someone", b"\x00bad header line\r\nTo: someone", 1)
    results = result(broken)
    assert [r.domain for r in results] == ["shop.example.com"]
    assert results[0].result in ("permerror", "fail")


def test_relaxed_canonicalisation_survives_rewrapping() -> None:
    signed = sign(
        MESSAGE, b"s1", b"shop.example.com", BRAND_KEY, canonicalize=(b"relaxed", b"relaxed")
    )
    rewrapped = signed.replace(b"Subject: Your order", b"Subject:   Your  order")
    assert [r.result for r in result(rewrapped)] == ["pass"]


def test_ed25519_signature_passes() -> None:
    nacl_signing = pytest.importorskip("nacl.signing")
    key = nacl_signing.SigningKey(bytes(range(32)))
    private = base64.b64encode(bytes(key))
    public = base64.b64encode(bytes(key.verify_key))
    signed = sign(
        MESSAGE, b"ed", b"shop.example.com", private, signature_algorithm=b"ed25519-sha256"
    )
    records = {"ed._domainkey.shop.example.com": b"v=DKIM1; k=ed25519; p=" + public}
    assert [r.result for r in result(signed, dict_dns(records))] == ["pass"]
    assert [r.result for r in result(signed.replace(b"parcel", b"prize"), dict_dns(records))] == [
        "fail"
    ]


# --------------------------------------------------------------------------- gateway.dns


@pytest.fixture()
def server() -> Iterator[LoopbackDns]:
    srv = LoopbackDns(
        {
            "s1._domainkey.shop.example.com": [BRAND_RECORD],
            "empty.example.com": [],
            "long.example.com": [LONG_RECORD],
        },
        slow={"slow.example.com"},
        servfail={"broken.example.com"},
    )
    with srv:
        yield srv


def _lookup(srv: LoopbackDns, timeout: float = 2.0) -> TxtLookup:
    return make_txt_lookup(timeout=timeout, nameservers=["127.0.0.1"], port=srv.port)


def test_lookup_returns_the_key(server: LoopbackDns) -> None:
    lookup = _lookup(server)
    assert lookup(b"s1._domainkey.shop.example.com.") == BRAND_RECORD
    assert lookup("S1._domainkey.Shop.Example.com") == BRAND_RECORD
    # A 2048-bit key does not fit one 255-byte string: the strings are joined back.
    assert lookup(b"long.example.com") == LONG_RECORD


def test_lookup_caches_answers(server: LoopbackDns) -> None:
    lookup = _lookup(server)
    for _ in range(3):
        assert lookup(b"s1._domainkey.shop.example.com.") == BRAND_RECORD
        assert lookup(b"missing.example.com.") == b""
    assert server.queries.count("s1._domainkey.shop.example.com.") == 1
    assert server.queries.count("missing.example.com.") == 1


def test_nxdomain_is_empty(server: LoopbackDns) -> None:
    assert _lookup(server)(b"nothing._domainkey.example.com.") == b""


def test_name_without_txt_is_empty(server: LoopbackDns) -> None:
    assert _lookup(server)(b"empty.example.com.") == b""


def test_servfail_is_temp_error(server: LoopbackDns) -> None:
    with pytest.raises(DnsTempError):
        _lookup(server)(b"broken.example.com.")


@pytest.mark.timeout(10)
def test_unanswered_query_times_out_as_temp_error(server: LoopbackDns) -> None:
    with pytest.raises(DnsTempError):
        _lookup(server, timeout=0.3)(b"slow.example.com.")


def test_not_a_dns_name_is_empty(server: LoopbackDns) -> None:
    lookup = _lookup(server)
    assert lookup(b"\xff\xfe") == b""
    assert lookup(b"a..b") == b""
    assert lookup(b"x" * 300) == b""


def test_lookup_survives_pickling(server: LoopbackDns) -> None:
    lookup = pickle.loads(pickle.dumps(_lookup(server)))
    assert lookup(b"s1._domainkey.shop.example.com.") == BRAND_RECORD


def test_worker_initializer_builds_the_lookup(server: LoopbackDns) -> None:
    init_worker(2.0, 16, ["127.0.0.1"], server.port)
    assert worker_lookup()(b"s1._domainkey.shop.example.com.") == BRAND_RECORD


def test_end_to_end_verify_through_loopback_dns(server: LoopbackDns) -> None:
    once = sign(MESSAGE, b"s1", b"shop.example.com", BRAND_KEY)
    twice = sign(once, b"gone", b"esp.example.net", ESP_KEY)
    results = verify_dkim(twice, _lookup(server), LIMITS)
    assert [(r.domain, r.result) for r in results] == [
        ("esp.example.net", "permerror"),
        ("shop.example.com", "pass"),
    ]


@pytest.mark.timeout(10)
def test_end_to_end_dns_timeout_is_temperror() -> None:
    signed = sign(MESSAGE, b"slow", b"shop.example.com", BRAND_KEY)
    slow = LoopbackDns({}, slow={"slow._domainkey.shop.example.com"})
    with slow:
        lookup = make_txt_lookup(timeout=0.3, nameservers=["127.0.0.1"], port=slow.port)
        assert [r.result for r in verify_dkim(signed, lookup, LIMITS)] == ["temperror"]
