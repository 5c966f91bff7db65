"""Verification keys: JWK documents parsed into keys that each carry the algorithms they may verify.

A key's algorithms follow from its type (and the JWK's own `alg`), so a token can never make an RSA public key
act as an HMAC secret or a P-384 key verify ES256. Key stores and discovery (jwks.py) build on this.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt import PyJWK, PyJWTError

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
#: RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_PRIVATE_KEY_TYPES = (RSAPrivateKey, EllipticCurvePrivateKey, Ed25519PrivateKey, Ed448PrivateKey)


class KeyLoadError(Exception):
    """Key material could not be read or contained no usable signing key."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key_id: str | None
    #: A `cryptography` public key, or the HMAC secret bytes.
    key: Any
    algorithms: frozenset[str]


class KeySet:
    """Keys indexed once per load, so request-time lookups are dict reads."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = tuple(keys)
        self._by_kid: dict[str, VerificationKey] = {}
        for key in self.keys:
            if key.key_id is not None:
                self._by_kid.setdefault(key.key_id, key)
        candidates: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            for algorithm in key.algorithms:
                candidates.setdefault(algorithm, []).append(key)
        self._sole_key_by_algorithm = {alg: keys[0] for alg, keys in candidates.items() if len(keys) == 1}

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, key_id: str | None, algorithm: str) -> VerificationKey | None:
        """The key named `key_id`; without a kid (or in a set that names no keys) the only key for `algorithm`.

        A kid-named key is returned even if it cannot verify `algorithm`: the caller reports that mismatch
        rather than an unknown key, which would trigger a pointless refetch.
        """
        if key_id is None or not self._by_kid:
            return self._sole_key_by_algorithm.get(algorithm)
        return self._by_kid.get(key_id)


def parse_jwks(document: bytes) -> tuple[KeySet, int]:
    """The usable signing keys of a JWKS document and how many were skipped (encryption, unsupported, broken)."""
    data = json_object(document, "JWKS")
    entries = data.get("keys")
    if not isinstance(entries, list):
        raise KeyLoadError("JWKS has no 'keys' list")
    keys = [key for key in map(_signing_key, entries) if key is not None]
    if not keys:
        raise KeyLoadError(f"JWKS has no usable signing keys ({len(entries)} skipped)")
    return KeySet(keys), len(entries) - len(keys)


def _signing_key(jwk: object) -> VerificationKey | None:
    """The key with the algorithms it may verify, or None for anything not a usable public signing key.

    Symmetric (`oct`) JWKs are refused: a JWKS is public, and HMAC secrets come only from `shared_secret_file`.
    """
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
        return None
    declared, kid = jwk.get("alg"), jwk.get("kid")
    if not isinstance(declared, str | None) or not isinstance(kid, str | None):
        return None
    try:
        key = PyJWK(jwk).key
    except (PyJWTError, TypeError, ValueError):
        return None
    if isinstance(key, _PRIVATE_KEY_TYPES):
        key = key.public_key()
    algorithms = _algorithms_for(key)
    if declared is not None:
        algorithms &= {declared}
    return VerificationKey(kid, key, algorithms) if algorithms else None


def _algorithms_for(key: object) -> frozenset[str]:
    if isinstance(key, RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHM_BY_CURVE:
        return frozenset({EC_ALGORITHM_BY_CURVE[key.curve.name]})
    if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def json_object(document: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(document)
    except (ValueError, RecursionError) as error:
        raise KeyLoadError(f"{what} is not valid JSON") from error
    if not isinstance(data, dict):
        raise KeyLoadError(f"{what} is not a JSON object")
    return data
