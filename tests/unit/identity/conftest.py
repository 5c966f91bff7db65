"""Fixtures for the identity tests: keys, a clock, a token minter and provider configs."""

from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support.identity_helpers import AUDIENCE, ISSUER, JWKS_URL, NOW, Keys, Mint, PrivateKey, ProviderFactory

from extauth.clock import ManualClock
from extauth.config.schema import JwksConfig, JwtProviderConfig


@pytest.fixture(scope="session")
def keys() -> Keys:
    """One key per family, generated once: RSA generation is the slow part of this suite."""
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
        secret=b"s" * 32,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def mint() -> Mint:
    """Signs a token with sensible valid claims; keyword arguments override claims, None removes one."""

    def sign(key: PrivateKey | bytes, algorithm: str, kid: str | None = "rsa-1", **overrides: Any) -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 600, **overrides}
        claims = {name: value for name, value in claims.items() if value is not None}
        headers = {"kid": kid} if kid is not None else None
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)

    return sign


@pytest.fixture
def provider() -> ProviderFactory:
    """A primary JWKS-by-URL provider config accepting RS256, PS256, ES256 and EdDSA; keyword arguments override
    fields."""

    def build(**overrides: Any) -> JwtProviderConfig:
        fields: dict[str, Any] = {
            "name": "idp",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "jwks": JwksConfig(url=JWKS_URL),
            "primary": True,
            **overrides,
        }
        return JwtProviderConfig(**fields)

    return build


@pytest.fixture
def secret_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(keys.secret + b"\n")
    return path
