"""Two issuers behind one gateway (corp, primary; partner, its own key and JWKS): their users never look alike.

Through real Envoy, extauth and the demo policy: a partner token cannot borrow corp roles or corp identities,
equal `sub` values from the two issuers reach the upstream and the limiter as different callers, and the
identity headers a client sends are never the ones the upstream reads.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from support.idp import IdentityProvider

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, Response, extauth_config
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token

PARTNER_KEY_ID = "partner-1"


@pytest.fixture(scope="module")
def partner_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def partner_idp(tmp_path_factory: pytest.TempPathFactory, partner_key: rsa.RSAPrivateKey) -> Iterator[IdentityProvider]:
    """The partner's own IdP, publishing its JWKS over HTTP on loopback (the one place plain HTTP is allowed)."""
    jwk = {**json.loads(RSAAlgorithm.to_jwk(partner_key.public_key())), "kid": PARTNER_KEY_ID, "alg": "RS256",
           "use": "sig"}
    jwks_file = tmp_path_factory.mktemp("partner") / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    idp = IdentityProvider(jwks_file)
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def extauth(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts,
            partner_idp: IdentityProvider) -> Iterator[ExtauthProcess]:
    """The local stack's extauth (corp = the dev provider, primary) plus a partner provider that trusts only its
    `partner_roles` claim; the `gateway` fixture puts Envoy in front of it."""
    run_dir: Path = tmp_path_factory.mktemp("extauth-two-providers")
    config = extauth_config(run_dir, certs)
    config["authentication"]["providers"].append({
        "name": "partner", "issuer": partner_idp.issuer, "audiences": [DEV_AUDIENCE], "algorithms": ["RS256"],
        "jwks": {"url": partner_idp.jwks_url}, "roles_claim": "partner_roles"})
    config["authentication"]["forward"]["claim_headers"] = {"x-extauth-realm-roles": "realm_access.roles"}
    process = ExtauthProcess(run_dir, config)
    process.wait_serving()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def corp(certs: DevCerts):
    def token(subject: str, **claims: object) -> str:
        return mint_token(certs.jwt_signing_key, subject=subject, claims=claims)
    return token


@pytest.fixture(scope="module")
def partner(partner_key: rsa.RSAPrivateKey, partner_idp: IdentityProvider):
    def token(subject: str, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": partner_idp.issuer, "aud": DEV_AUDIENCE, "sub": subject, "iat": now, "exp": now + 600,
                   **claims}
        return jwt.encode(payload, partner_key, algorithm="RS256", headers={"kid": PARTNER_KEY_ID})
    return token


def seen_by_upstream(response: Response) -> dict[str, str]:
    assert response.status == 200, response.body
    return response.json()["headers"]


def test_partner_roles_claim_is_not_trusted_so_its_admin_is_not_an_admin(gateway: EnvoyProcess, corp, partner) -> None:
    """A partner token with `sub: root, roles: [admin]` is 403 on /admin; the same claims from corp are 200."""
    impostor = partner("root", roles=["admin"], realm_access={"roles": ["admin"]}, groups=["admins"])
    denied = gateway.get("/admin/users", impostor)
    assert denied.status == 403 and denied.json()["reason"] == "forbidden"
    assert gateway.get("/admin/users", corp("root", roles=["admin"])).status == 200


def test_partner_roles_come_only_from_the_claim_it_is_trusted_for(gateway: EnvoyProcess, partner) -> None:
    """`partner_roles: [reader]` opens /api for a partner user and is what the upstream's x-extauth-roles says;
    `roles: [admin]` beside it opens nothing and is not forwarded."""
    token = partner("root", partner_roles=["reader"], roles=["admin"])
    assert seen_by_upstream(gateway.get("/api/orders", token))["x-extauth-roles"] == "reader"
    assert gateway.get("/admin/users", token).status == 403


def test_equal_subjects_of_two_issuers_reach_the_upstream_as_different_callers(
        gateway: EnvoyProcess, corp, partner, partner_idp: IdentityProvider) -> None:
    """corp `root` arrives as `root`, partner `root` as `partner:root`, each with its issuer in x-extauth-issuer."""
    corp_seen = seen_by_upstream(gateway.get("/api/orders", corp("root", roles=["reader"])))
    partner_seen = seen_by_upstream(gateway.get("/api/orders", partner("root", partner_roles=["reader"])))
    assert (corp_seen["x-extauth-subject"], corp_seen["x-extauth-issuer"]) == ("root", DEV_ISSUER)
    assert (partner_seen["x-extauth-subject"], partner_seen["x-extauth-issuer"]) == ("partner:root",
                                                                                    partner_idp.issuer)


def test_a_dotted_claim_path_is_forwarded_as_its_nested_value(gateway: EnvoyProcess, corp) -> None:
    """`x-extauth-realm-roles: realm_access.roles` carries the nested list, comma-joined."""
    token = corp("alice", roles=["reader"], realm_access={"roles": ["viewer", "auditor"]})
    assert seen_by_upstream(gateway.get("/api/orders", token))["x-extauth-realm-roles"] == "viewer,auditor"


def test_a_corp_subject_that_reads_as_a_partner_identity_is_refused(gateway: EnvoyProcess, corp) -> None:
    """A primary-provider `sub` of `partner:root` (in any case) would forge the partner's identity: 401."""
    for subject in ("partner:root", "PARTNER:root", "Partner:"):
        response = gateway.get("/api/orders", corp(subject, roles=["reader"]))
        assert response.status == 401 and response.json()["reason"] == "invalid_subject", subject


@pytest.mark.parametrize("subject", ["root ", " root", "root\t", "root\u00a0", "r" * 1025])
def test_a_subject_that_sanitising_would_change_is_refused_not_altered(gateway: EnvoyProcess, corp,
                                                                       subject: str) -> None:
    """Surrounding whitespace or an over-long `sub` is a 401 `invalid_subject`, never a trimmed `root`."""
    response = gateway.get("/api/orders", corp(subject, roles=["reader"]))
    assert response.status == 401 and response.json()["reason"] == "invalid_subject"


def _remaining(response: Response) -> int:
    found = re.search(r";r=(\d+)", response.headers.get("ratelimit", ""))
    assert found, response.headers
    return int(found.group(1))


def test_equal_subjects_of_two_issuers_have_separate_rate_limit_buckets(gateway: EnvoyProcess, corp,
                                                                       partner) -> None:
    """/api/limited (5 per 10 s per subject): corp `limit-me` exhausted, partner `limit-me` still has all 5.

    The partner's first answer says 4 remain, which a shared bucket (empty, or refilled by one at most) cannot.
    """
    corp_token = corp("limit-me", roles=["reader"])
    statuses = [gateway.get("/api/limited", corp_token).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    fresh = gateway.get("/api/limited", partner("limit-me", partner_roles=["reader"]))
    assert fresh.status == 200 and _remaining(fresh) == 4


SPOOFED = {"x-extauth-issuer": "https://evil.example", "X-Extauth-Issuer": "https://evil.example",
           "X-EXTAUTH-SUBJECT": "root", "x-extauth-subject": "root", "x-extauth-roles": "admin"}


@pytest.mark.parametrize(("name", "value"), SPOOFED.items())
def test_client_sent_identity_headers_never_reach_the_upstream(gateway: EnvoyProcess, partner, name: str,
                                                               value: str) -> None:
    """On a public route the client's identity header is removed; on an authenticated one it is overwritten."""
    anonymous = seen_by_upstream(gateway.request("GET", "/public/hello", {name: value}))
    assert name.lower() not in anonymous
    token = partner("mallory", partner_roles=["reader"])
    authenticated = seen_by_upstream(gateway.request("GET", "/api/orders", {name: value,
                                                                            "authorization": f"Bearer {token}"}))
    assert value not in authenticated.get(name.lower(), "")


def test_an_underscored_identity_header_is_refused_at_the_edge(gateway: EnvoyProcess) -> None:
    """`x_extauth_issuer` (read as x-extauth-issuer by some frameworks) never reaches the upstream: Envoy refuses it."""
    response = gateway.request("GET", "/public/hello", {"x_extauth_issuer": "https://evil.example"})
    assert response.status == 400
