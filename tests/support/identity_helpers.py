"""Constants, key helpers and fixture types for the identity tests (a module, so tests can import them)."""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from extauth.clock import ManualClock
from extauth.config.schema import JwtProviderConfig

ISSUER = "https://idp.example"
AUDIENCE = "api"
JWKS_URL = "https://idp.example/jwks"
NOW = ManualClock().now()

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
#: `mint(key, algorithm, kid="rsa-1", **claim_overrides)` -> a signed token.
Mint = Callable[..., str]
#: `provider(**field_overrides)` -> a JWKS-by-URL provider config.
ProviderFactory = Callable[..., JwtProviderConfig]


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    secret: bytes


def public_jwk(private_key: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


def jwks_document(*jwks: Mapping[str, Any]) -> bytes:
    return json.dumps({"keys": list(jwks)}).encode()
