"""Keys from a live IdP: OIDC discovery, key rotation by unknown kid, and last-known-good keys when it fails."""

import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from support.checks import check
from support.idp import IdentityProvider

from extauth.devstack.gateway import ExtauthProcess, extauth_config
from extauth.devtools import DEV_AUDIENCE
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token


def provider_config(run_dir: Path, certs: DevCerts, jwks: dict) -> dict:
    config = extauth_config(run_dir, certs)
    config["authentication"]["providers"][0] = {"name": "idp", "issuer": jwks.pop("issuer"),
                                                "audiences": [DEV_AUDIENCE], "jwks": jwks, "primary": True}
    return config


def test_oidc_discovery_finds_the_jwks_and_verifies_tokens(tmp_path: Path, certs: DevCerts) -> None:
    """With oidc_discovery, extauth reads jwks_uri from the issuer's discovery document and accepts its tokens."""
    idp = IdentityProvider(certs.jwks)
    extauth = ExtauthProcess(tmp_path, provider_config(tmp_path, certs, {"issuer": idp.issuer,
                                                                         "oidc_discovery": True}))
    try:
        extauth.wait_serving()
        token = mint_token(certs.jwt_signing_key, subject="alice", issuer=idp.issuer, claims={"roles": ["reader"]})
        assert check(extauth.addresses[0], token).HasField("ok_response")
        assert idp.requests[:2] == ["/.well-known/openid-configuration", "/jwks.json"]
    finally:
        extauth.stop()
        idp.stop()


def test_rotated_key_is_fetched_on_first_use_and_kept_while_the_idp_is_down(tmp_path: Path, certs: DevCerts) -> None:
    """A token signed by a newly published key is accepted after one refetch; an IdP outage loses no keys."""
    idp = IdentityProvider(certs.jwks)
    extauth = ExtauthProcess(tmp_path, provider_config(tmp_path, certs, {
        "issuer": idp.issuer, "url": idp.jwks_url, "refetch_cooldown_seconds": 0, "refresh_seconds": 5}))
    try:
        extauth.wait_serving()
        address = extauth.addresses[0]
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        claims = {"iss": idp.issuer, "aud": DEV_AUDIENCE, "sub": "bob", "exp": 4_000_000_000, "roles": ["reader"]}
        rotated = jwt.encode(claims, new_key, algorithm="RS256", headers={"kid": "dev-2"})

        denied = check(address, rotated)
        assert '"reason":"unknown_key"' in denied.denied_response.body

        published = json.loads(RSAAlgorithm.to_jwk(new_key.public_key()))
        idp.jwks = {"keys": [*idp.jwks["keys"], {**published, "kid": "dev-2", "alg": "RS256", "use": "sig"}]}
        fetches = idp.requests.count("/jwks.json")
        assert check(address, rotated).HasField("ok_response")
        assert idp.requests.count("/jwks.json") == fetches + 1

        idp.failing = True
        fresh = mint_token(certs.jwt_signing_key, subject="carol", issuer=idp.issuer, claims={"roles": ["reader"]})
        assert check(address, fresh).HasField("ok_response")
    finally:
        extauth.stop()
        idp.stop()
