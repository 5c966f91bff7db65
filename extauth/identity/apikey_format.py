"""The API key format: `eak_` + 43 random base62 characters + a 6-character base62 CRC32 checksum.

The prefix makes a leaked key recognisable (secret scanners, the audit scrubber: `KEY_PATTERN`); the body holds
256 bits from `secrets`; the checksum lets a typo, a truncation or a case change be refused without a store
lookup (CRC32 catches every change confined to 32 consecutive bits, so every single-character substitution,
adjacent transposition and case flip). The checksum is not a secret and proves nothing about who made the key:
only the store decides whether a well-formed key is one.

A key is stored as its SHA-256 digest only. The body is 256 random bits, so no dictionary or brute force can
invert the digest, and a slow password hash would buy nothing but Check latency.
"""

import hashlib
import re
import secrets
import zlib

PREFIX = "eak_"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: 62**43 > 2**256: 43 characters drawn uniformly carry at least 256 bits.
BODY_CHARS = 43
#: 62**6 > 2**32: every CRC32 value has a 6-character spelling.
CHECKSUM_CHARS = 6
KEY_CHARS = len(PREFIX) + BODY_CHARS + CHECKSUM_CHARS
#: What a key looks like (docs/apikeys.md gives it to secret scanners); the audit scrubber masks its matches.
KEY_PATTERN = rf"{PREFIX}[0-9A-Za-z]{{{BODY_CHARS + CHECKSUM_CHARS}}}"
_WELL_FORMED = re.compile(KEY_PATTERN)


def new_api_key() -> str:
    body = "".join(secrets.choice(BASE62) for _ in range(BODY_CHARS))
    return PREFIX + body + checksum(PREFIX + body)


def checksum(text: str) -> str:
    """CRC32 of `text` in base62, left-padded with `0` to 6 characters."""
    value = zlib.crc32(text.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_CHARS):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key (never quoting it), or None when it is well formed."""
    if len(key) != KEY_CHARS or not key.startswith(PREFIX):
        return f"an API key is {PREFIX}… and {KEY_CHARS} characters long"
    if not _WELL_FORMED.fullmatch(key):
        return "an API key holds only letters and digits after its prefix"
    if checksum(key[:-CHECKSUM_CHARS]) != key[-CHECKSUM_CHARS:]:
        return "the API key's checksum does not match (mistyped or truncated)"
    return None


def key_digest(key: str) -> bytes:
    """What the store holds for `key` (in hex): its SHA-256."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
