"""JwtVerifier: every rejection maps to its own reason, and no description quotes the token."""

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.utils import base64url_encode
from support.identity_helpers import (
    AUDIENCE,
    ISSUER,
    JWKS_URL,
    NOW,
    Keys,
    Mint,
    ProviderFactory,
    jwks_document,
    public_jwk,
)

from extauth.clock import ManualClock
from extauth.config.schema import JwtProviderConfig
from extauth.identity.http import StaticFetcher
from extauth.identity.jwks import JwksStore, key_store_for
from extauth.identity.jwt import JwtVerifier, UnverifiedToken
from extauth.identity.principal import AuthenticationError, KeysUnavailableError, Principal
from extauth.reasons import Reason

Verifier = Callable[..., Awaitable[JwtVerifier]]


@pytest.fixture
async def make_verifier(keys: Keys, clock: ManualClock) -> AsyncIterator[Verifier]:
    """Builds a started verifier over a JWKS of rsa-1, ec-1 and ed-1 (or the given document)."""
    stores = []

    async def build(config: JwtProviderConfig, document: bytes | None = None) -> JwtVerifier:
        document = document or jwks_document(
            public_jwk(keys.rsa, "rsa-1"), public_jwk(keys.ec, "ec-1"), public_jwk(keys.ed, "ed-1")
        )
        store = key_store_for(config, clock, StaticFetcher({JWKS_URL: document}))
        await store.start()
        stores.append(store)
        return JwtVerifier(config, store, clock)

    yield build
    for store in stores:
        await store.stop()


async def verify(verifier: JwtVerifier, token: str) -> Principal:
    return await verifier.verify(UnverifiedToken.parse(token))


async def rejection(verifier: JwtVerifier, token: str) -> Reason:
    """The reason `token` is refused, after checking the description quotes none of it."""
    with pytest.raises(AuthenticationError) as caught:
        await verify(verifier, token)
    for segment in token.split("."):
        assert not segment or segment not in caught.value.description
    assert "alice" not in caught.value.description
    return caught.value.reason


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token assembled by hand, for signatures pyjwt refuses to produce."""
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode()) for part in (header, claims)
    )
    return (signing_input + b"." + base64url_encode(sign(signing_input))).decode()


VALID_CLAIMS = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": NOW + 600}


@pytest.mark.parametrize(
    ("family", "algorithm", "kid"),
    [("rsa", "RS256", "rsa-1"), ("rsa", "PS256", "rsa-1"), ("ec", "ES256", "ec-1"), ("ed", "EdDSA", "ed-1")],
)
async def test_accepts_a_valid_token_of_each_key_family(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys, family: str, algorithm: str, kid: str
) -> None:
    """RSA (PKCS#1 and PSS), EC P-256 and Ed25519 tokens verify and become a Principal."""
    verifier = await make_verifier(provider())
    principal = await verify(verifier, mint(getattr(keys, family), algorithm, kid=kid))
    assert (principal.subject, principal.issuer, principal.provider, principal.key_id) == ("alice", ISSUER, "idp", kid)
    assert principal.expires_at == NOW + 600
    assert principal.claims["aud"] == AUDIENCE


async def test_accepts_hs256_from_a_shared_secret_file(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys, secret_file: Path
) -> None:
    """A shared-secret provider verifies HS256 whatever kid the token carries (the trailing newline is ignored)."""
    verifier = await make_verifier(provider(jwks=None, shared_secret_file=secret_file, algorithms=["HS256"]))
    assert (await verify(verifier, mint(keys.secret, "HS256", kid="anything"))).subject == "alice"
    assert (await verify(verifier, mint(keys.secret, "HS256", kid=None))).subject == "alice"


async def test_rejects_alg_none(make_verifier: Verifier, provider: ProviderFactory) -> None:
    """An unsigned `alg: none` token is refused."""
    verifier = await make_verifier(provider())
    token = unsigned_token({"alg": "none", "kid": "rsa-1"}, VALID_CLAIMS, lambda _: b"")
    assert await rejection(verifier, token) == Reason.DISALLOWED_ALGORITHM


async def test_rejects_alg_none_even_when_configured(make_verifier: Verifier, provider: ProviderFactory) -> None:
    """`none` in the algorithm list (possible only by bypassing validation) is still never accepted."""
    config = provider().model_copy(update={"algorithms": ["RS256", "none", "None"]})
    verifier = await make_verifier(config)
    for alg in ("none", "None"):
        token = unsigned_token({"alg": alg, "kid": "rsa-1"}, VALID_CLAIMS, lambda _: b"")
        assert await rejection(verifier, token) == Reason.DISALLOWED_ALGORITHM


async def test_rejects_an_algorithm_outside_the_allow_list(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """A correctly signed RS256 token is refused by a provider that allows only ES256."""
    verifier = await make_verifier(provider(algorithms=["ES256"]))
    assert await rejection(verifier, mint(keys.rsa, "RS256")) == Reason.DISALLOWED_ALGORITHM


@pytest.mark.parametrize("algorithms", [["RS256"], ["RS256", "HS256"]], ids=["validated", "forced-into-config"])
async def test_rejects_hs256_signed_with_the_rsa_public_key(
    make_verifier: Verifier, provider: ProviderFactory, keys: Keys, algorithms: list[str]
) -> None:
    """RS/HS confusion fails: the RSA public key is never used as an HMAC secret, even if HS256 were allowed."""
    config = provider().model_copy(update={"algorithms": algorithms})
    verifier = await make_verifier(config)
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = unsigned_token(
        {"alg": "HS256", "kid": "rsa-1"}, VALID_CLAIMS, lambda data: hmac.new(pem, data, hashlib.sha256).digest()
    )
    assert await rejection(verifier, token) == Reason.DISALLOWED_ALGORITHM


async def test_rejects_a_kid_whose_key_type_does_not_match_the_algorithm(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """An ES256 token naming the RSA key's kid is refused before any signature check."""
    verifier = await make_verifier(provider())
    assert await rejection(verifier, mint(keys.ec, "ES256", kid="rsa-1")) == Reason.DISALLOWED_ALGORITHM


async def test_rejects_an_ec_key_on_another_curve(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint
) -> None:
    """A P-384 key verifies ES384 and is never used for an ES256 token."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = jwks_document(public_jwk(p384, "ec-384"))
    verifier = await make_verifier(provider(algorithms=["ES256", "ES384"]), document)
    assert (await verify(verifier, mint(p384, "ES384", kid="ec-384"))).key_id == "ec-384"
    forged = unsigned_token({"alg": "ES256", "kid": "ec-384"}, VALID_CLAIMS, lambda _: b"x" * 64)
    assert await rejection(verifier, forged) == Reason.DISALLOWED_ALGORITHM


async def test_a_jwk_alg_restricts_its_key(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """An RSA JWK declaring `alg: RS256` does not verify PS256 tokens."""
    document = jwks_document(public_jwk(keys.rsa, "rsa-1", alg="RS256"))
    verifier = await make_verifier(provider(), document)
    assert await rejection(verifier, mint(keys.rsa, "PS256")) == Reason.DISALLOWED_ALGORITHM


async def test_rejects_a_signature_by_another_key(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """A token signed by a different RSA key under a known kid has an invalid signature."""
    verifier = await make_verifier(provider())
    assert await rejection(verifier, mint(keys.rsa_other, "RS256")) == Reason.INVALID_SIGNATURE


async def test_rejects_a_tampered_payload(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """Changing the payload of a signed token breaks its signature."""
    verifier = await make_verifier(provider())
    header, _, signature = mint(keys.rsa, "RS256").split(".")
    payload = base64url_encode(json.dumps({**VALID_CLAIMS, "sub": "admin"}).encode()).decode()
    assert await rejection(verifier, f"{header}.{payload}.{signature}") == Reason.INVALID_SIGNATURE


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": NOW - 31}, Reason.TOKEN_EXPIRED),
        ({"nbf": NOW + 31}, Reason.TOKEN_NOT_YET_VALID),
        ({"iat": NOW + 31}, Reason.TOKEN_ISSUED_IN_FUTURE),
        ({"aud": "other-api"}, Reason.INVALID_AUDIENCE),
        ({"aud": None}, Reason.MISSING_CLAIM),
        ({"sub": None}, Reason.MISSING_CLAIM),
        ({"exp": None}, Reason.MISSING_CLAIM),
        ({"iss": "https://other.example"}, Reason.INVALID_ISSUER),
        ({"exp": "tomorrow"}, Reason.MALFORMED_TOKEN),
        ({"exp": float("nan")}, Reason.MALFORMED_TOKEN),
        ({"exp": 10**400}, Reason.MALFORMED_TOKEN),
        ({"sub": 42}, Reason.INVALID_SUBJECT),
    ],
)
async def test_rejects_bad_claims_with_a_specific_reason(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys, claims: dict[str, Any], reason: Reason
) -> None:
    """Time, audience, issuer, required and ill-typed claims each fail with their own reason (leeway 30 s)."""
    verifier = await make_verifier(provider())
    assert await rejection(verifier, mint(keys.rsa, "RS256", **claims)) == reason


async def test_time_claims_use_the_injected_clock_and_leeway(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys, clock: ManualClock
) -> None:
    """A token is accepted until `exp + leeway` on the injected clock and refused after."""
    verifier = await make_verifier(provider(leeway_seconds=10))
    token = mint(keys.rsa, "RS256", exp=NOW + 60, nbf=NOW + 5)
    assert (await verify(verifier, token)).subject == "alice"
    clock.advance(69)
    assert (await verify(verifier, token)).subject == "alice"
    clock.advance(1)
    assert await rejection(verifier, token) == Reason.TOKEN_EXPIRED


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "e30.e30.x.y", "W10.e30.", "e30.W10.", "!!!.e30.", "eyJhbGciOjF9.e30."],
    ids=["empty", "one-part", "two-parts", "not-base64-json", "four-parts", "header-array", "payload-array",
         "bad-base64", "alg-not-string"],
)
def test_malformed_tokens_are_rejected_before_verification(token: str) -> None:
    """Anything that is not three base64url JSON-object segments with a string alg is a malformed token."""
    with pytest.raises(AuthenticationError) as caught:
        UnverifiedToken.parse(token)
    assert caught.value.reason == Reason.MALFORMED_TOKEN


async def test_rejects_an_unknown_kid(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """A kid absent from the JWKS (after the refetch) is an unknown key."""
    verifier = await make_verifier(provider())
    assert await rejection(verifier, mint(keys.rsa, "RS256", kid="rsa-9")) == Reason.UNKNOWN_KEY


async def test_a_token_without_kid_uses_the_only_compatible_key(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """Without a kid the single key able to verify the algorithm is used; with two candidates the key is unknown."""
    verifier = await make_verifier(provider())
    assert (await verify(verifier, mint(keys.ec, "ES256", kid=None))).key_id == "ec-1"
    two_rsa = jwks_document(public_jwk(keys.rsa, "rsa-1"), public_jwk(keys.rsa_other, "rsa-2"))
    verifier = await make_verifier(provider(), two_rsa)
    assert await rejection(verifier, mint(keys.rsa, "RS256", kid=None)) == Reason.UNKNOWN_KEY


async def test_keys_never_loaded_is_a_service_error(
    clock: ManualClock, provider: ProviderFactory, mint: Mint, keys: Keys
) -> None:
    """While a provider has never had keys the failure is KeysUnavailableError (503), not a client error."""
    config = provider()
    store = JwksStore(config, clock, StaticFetcher())
    verifier = JwtVerifier(config, store, clock)
    with pytest.raises(KeysUnavailableError) as caught:
        await verify(verifier, mint(keys.rsa, "RS256"))
    assert caught.value.reason == Reason.KEYS_UNAVAILABLE


@pytest.mark.parametrize(
    ("roles_claim", "claims", "roles"),
    [
        ("roles", {"roles": ["admin", "dev", 7]}, {"admin", "dev"}),
        ("scope", {"scope": "read write,admin"}, {"read", "write", "admin"}),
        ("realm_access.roles", {"realm_access": {"roles": ["admin"]}}, {"admin"}),
        ("https://example.com/roles", {"https://example.com/roles": ["ops"]}, {"ops"}),
        ("realm_access.roles", {"realm_access": ["admin"]}, set()),
        ("roles", {}, set()),
    ],
    ids=["list", "separated-string", "dotted-path", "dotted-name", "path-through-non-object", "absent"],
)
async def test_roles_come_from_the_configured_claim(
    make_verifier: Verifier, provider: ProviderFactory, mint: Mint, keys: Keys,
    roles_claim: str, claims: dict[str, Any], roles: set[str],
) -> None:
    """Roles are read from a claim name or dotted path, as a list of strings or a space/comma separated string."""
    verifier = await make_verifier(provider(roles_claim=roles_claim))
    assert (await verify(verifier, mint(keys.rsa, "RS256", **claims))).roles == roles
