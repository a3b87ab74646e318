"""Deterministic signing keys for the sample scenario, their public JWKS, and RS256 token minting.

Why derived, not generated: ``cryptography`` cannot seed RSA key generation, and random keys would
change every committed token and certificate on each run. The primes come from ``random.Random``
seeded with the scenario seed (Miller-Rabin below), so the same seed gives the same keys, tokens and
certificates byte for byte. The private numbers live only in memory: nothing here serializes a
private key, and the JWKS carries only ``n``/``e``/``x5c``.

These are toy keys for synthetic logs, derived from a public seed: never use them for anything real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

E = 65537


def _odd_primes_below(limit: int) -> list[int]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, limit, i)))
    return [i for i in range(3, limit, 2) if sieve[i]]


_SMALL_PRIMES = _odd_primes_below(2000)
# One gcd with the product of the odd primes below 2000 rejects ~85% of odd candidates before the
# first (slow) Miller-Rabin round; a larger bound costs more in gcd than it saves (measured).
_PRIMORIAL = math.prod(_SMALL_PRIMES)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def is_probable_prime(n: int, rng: random.Random, rounds: int = 8) -> bool:
    """Miller-Rabin with bases drawn from ``rng`` (deterministic for a seeded rng)."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES[:50]:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _random_prime(rng: random.Random, bits: int) -> int:
    while True:
        # top two bits set so p*q has exactly 2*bits bits; odd
        cand = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if math.gcd(cand, _PRIMORIAL) != 1 or math.gcd(E, cand - 1) != 1:
            continue
        if is_probable_prime(cand, rng):
            return cand


@lru_cache(maxsize=16)
def derive_rsa_key(seed_text: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key whose primes are drawn from ``random.Random(seed_text)``: same text, same key."""
    rng = random.Random(seed_text)
    p = _random_prime(rng, bits // 2)
    q = _random_prime(rng, bits // 2)
    while q == p:
        q = _random_prime(rng, bits // 2)
    n = p * q
    d = pow(E, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(E, n),
    )
    return numbers.private_key()


@dataclass
class SigningKey:
    """One published signing key: the in-memory private key plus its public JWK."""

    label: str  # "enterprise-a", "enterprise-b", "consumer"
    scope: str  # "enterprise" or "consumer"
    issuer: str  # the JWK `issuer` (template for enterprise keys)
    private: rsa.RSAPrivateKey
    cert_der: bytes
    not_before: datetime
    not_after: datetime
    first_published: datetime  # first JWKS snapshot that lists it

    @property
    def kid(self) -> str:
        # Entra: kid == x5t == base64url(SHA-1 of the DER certificate)
        return b64url(hashlib.sha1(self.cert_der).digest())

    @property
    def thumbprint_hex(self) -> str:
        return hashlib.sha1(self.cert_der).hexdigest()

    def jwk(self) -> dict[str, object]:
        pub = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_b64url(pub.n),
            "e": _int_b64url(pub.e),
            "x5c": [base64.b64encode(self.cert_der).decode("ascii")],
            "issuer": self.issuer,
        }

    def header_b64(self) -> str:
        # Entra's access-token header order: typ, alg, x5t, kid
        header = {"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid}
        return b64url(json.dumps(header, separators=(",", ":")).encode())


def _self_signed_cert(key: rsa.RSAPrivateKey, common_name: str, serial: int,
                      not_before: datetime, not_after: datetime) -> bytes:
    """Self-signed cert, as Entra publishes in x5c; PKCS#1 v1.5 signing keeps it deterministic."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    pub = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=timezone.utc)


# (label, scope, issuer, CN, not_before, not_after, first JWKS snapshot listing it)
KEY_SPECS = [
    ("enterprise-a", "enterprise", "https://login.microsoftonline.com/{tenantid}/v2.0",
     "accounts.accesscontrol.windows.net", _utc(2026, 3, 2, 14, 47, 50), _utc(2031, 3, 2, 14, 47, 50),
     _utc(2026, 10, 9, 4, 0)),
    ("enterprise-b", "enterprise", "https://login.microsoftonline.com/{tenantid}/v2.0",
     "accounts.accesscontrol.windows.net", _utc(2026, 10, 5, 9, 12, 31), _utc(2031, 10, 5, 9, 12, 31),
     _utc(2026, 10, 23, 4, 0)),
    ("consumer", "consumer", "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
     "Live ID STS Signing Public Key", _utc(2025, 6, 10, 18, 3, 7), _utc(2030, 6, 10, 18, 3, 7),
     _utc(2026, 10, 9, 4, 0)),
]


def build_keys(seed: int) -> dict[str, SigningKey]:
    """The scenario's three signing keys, derived from ``seed`` (about a second, cached per seed)."""
    keys: dict[str, SigningKey] = {}
    for label, scope, issuer, cn, nb, na, first in KEY_SPECS:
        private = derive_rsa_key(f"tokenhunt-samplegen:{seed}:key:{label}")
        serial = random.Random(f"tokenhunt-samplegen:{seed}:serial:{label}").getrandbits(63) | 1
        der = _self_signed_cert(private, cn, serial, nb, na)
        keys[label] = SigningKey(label, scope, issuer, private, der, nb, na, first)
    return keys


def mint_rs256(key: SigningKey, claims: dict[str, object], header_b64: str | None = None) -> str:
    """An RS256 JWT over ``claims`` (compact JSON, insertion order): deterministic bytes."""
    head = header_b64 or key.header_b64()
    body = b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signing_input = f"{head}.{body}"
    sig = key.private.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(sig)}"


def token_fingerprint(token: str) -> str:
    """SHA-256 hex of the raw token: how the lake refers to a token without holding it."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()
