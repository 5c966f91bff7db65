"""Dev tokens: RS256 tokens the dev JWKS verifies, and the CLI's claim parsers."""

import json

import jwt
import pytest

from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_ID
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token, mint_tokens, parse_claim, parse_json_claim

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def _verification_key(certs: DevCerts) -> jwt.PyJWK:
    return jwt.PyJWKSet.from_json(certs.jwks.read_text())[DEV_KEY_ID]


def _claims_at(token: str, certs: DevCerts) -> dict[str, object]:
    """Signature and audience are checked; time claims are not, since the tokens are minted at a fixed NOW."""
    return jwt.decode(
        token,
        _verification_key(certs),
        algorithms=["RS256"],
        audience=DEV_AUDIENCE,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


def test_token_verifies_against_dev_jwks(certs: DevCerts) -> None:
    """A freshly minted token passes full verification with the dev JWKS, issuer and audience."""
    token = mint_token(certs.jwt_signing_key, subject="alice")
    claims = jwt.decode(token, _verification_key(certs), algorithms=["RS256"], audience=DEV_AUDIENCE, issuer=DEV_ISSUER)
    assert claims["sub"] == "alice"

def test_minted_batch_tokens_are_distinct_and_each_verifies(certs: DevCerts) -> None:
    """`mint_tokens` returns `count` different tokens (distinct `jti`), every one verifying with the dev JWKS."""
    tokens = mint_tokens(certs.jwt_signing_key, 5, subject="bench", claims={"roles": ["reader"]}, now=NOW)
    assert len(set(tokens)) == 5
    claims = [_claims_at(token, certs) for token in tokens]
    assert {claim["sub"] for claim in claims} == {"bench"}
    assert len({claim["jti"] for claim in claims}) == 5
    assert all(claim["roles"] == ["reader"] and claim["exp"] == NOW + 3600 for claim in claims)


def test_header_names_dev_key(certs: DevCerts) -> None:
    """The header carries alg RS256 and kid dev-1, so extauth can pick the key from the JWKS."""
    header = jwt.get_unverified_header(mint_token(certs.jwt_signing_key, subject="alice"))
    assert header["alg"] == "RS256"
    assert header["kid"] == DEV_KEY_ID


def test_registered_claims_follow_now_and_ttl(certs: DevCerts) -> None:
    """iat and nbf are `now`, exp is `now + ttl_seconds`, and iss/aud default to the dev values."""
    claims = _claims_at(mint_token(certs.jwt_signing_key, subject="alice", now=NOW, ttl_seconds=60), certs)
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (int(NOW), int(NOW), int(NOW) + 60)
    assert (claims["iss"], claims["aud"]) == (DEV_ISSUER, DEV_AUDIENCE)


def test_every_token_has_a_unique_jti(certs: DevCerts) -> None:
    """Two tokens minted at the same instant have different jti values."""
    first = _claims_at(mint_token(certs.jwt_signing_key, subject="a", now=NOW), certs)
    second = _claims_at(mint_token(certs.jwt_signing_key, subject="a", now=NOW), certs)
    assert first["jti"] != second["jti"]


def test_extra_claims_are_added_and_may_override(certs: DevCerts) -> None:
    """Extra claims are included and win over the registered ones, to build deliberately bad tokens."""
    token = mint_token(
        certs.jwt_signing_key, subject="alice", now=NOW, claims={"roles": ["reader"], "aud": [DEV_AUDIENCE, "other"]}
    )
    claims = _claims_at(token, certs)
    assert claims["roles"] == ["reader"]
    assert claims["aud"] == [DEV_AUDIENCE, "other"]


def test_expired_token_is_rejected(certs: DevCerts) -> None:
    """A token minted in the past with a short ttl fails verification as expired."""
    token = mint_token(certs.jwt_signing_key, subject="alice", now=NOW, ttl_seconds=1)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, _verification_key(certs), algorithms=["RS256"], audience=DEV_AUDIENCE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("team=payments", ("team", "payments")),
        ("roles=reader,writer", ("roles", ["reader", "writer"])),
        ("roles=reader,", ("roles", ["reader"])),
        ("roles= reader , writer ", ("roles", ["reader", "writer"])),
        ("note=a=b", ("note", "a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_parse_claim(text: str, expected: tuple[str, object]) -> None:
    """KEY=VALUE gives a string, a comma gives a list of strings, and only the first '=' splits."""
    assert parse_claim(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=value", " =x"])
def test_parse_claim_rejects_missing_key(text: str) -> None:
    """Text without a key before '=' is refused with a message naming it."""
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_claim(text)


def test_parse_json_claim_keeps_json_types() -> None:
    """KEY=JSON keeps numbers, booleans and nested objects as such."""
    value = {"level": 3, "admin": False, "tags": ["a"]}
    assert parse_json_claim(f"org={json.dumps(value)}") == ("org", value)


def test_parse_json_claim_rejects_bad_json() -> None:
    """Invalid JSON is refused with a message naming the claim."""
    with pytest.raises(ValueError, match="claim 'org'"):
        parse_json_claim("org={not json")
