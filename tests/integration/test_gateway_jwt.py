"""JWT authentication and the demo policy, proven with HTTPS requests through a real Envoy to extauth."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_ID
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 600,
            "roles": ["admin"], **overrides}


def hs256_signed_with_rsa_public_key(certs: DevCerts) -> str:
    """The classic key-confusion forgery: HMAC keyed with the verifier's public key."""
    private = serialization.load_pem_private_key(certs.jwt_signing_key.read_bytes(), password=None)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (_b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": DEV_KEY_ID}).encode()) + "."
                     + _b64(json.dumps(_claims()).encode()))
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def unsigned_alg_none(certs: DevCerts) -> str:
    return jwt.encode(_claims(), key=None, algorithm="none", headers={"kid": DEV_KEY_ID})


def signed_by_unknown_key(certs: DevCerts) -> str:
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(), rogue, algorithm="RS256", headers={"kid": "rogue-1"})


def expired(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]}, ttl_seconds=60,
                      now=time.time() - 3600)


def wrong_audience(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", audience="another-api")


def wrong_issuer(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", issuer="https://evil.example")


REJECTED_TOKENS = {
    "expired": (expired, "token_expired"),
    "wrong audience": (wrong_audience, "invalid_audience"),
    "wrong issuer": (wrong_issuer, "unknown_issuer"),
    "alg none": (unsigned_alg_none, "disallowed_algorithm"),
    "HS256 keyed with the RSA public key": (hs256_signed_with_rsa_public_key, "disallowed_algorithm"),
    "unknown kid": (signed_by_unknown_key, "unknown_key"),
    "garbage": (lambda certs: "not.a.jwt", "malformed_token"),
    "not even dotted": (lambda certs: "x" * 200, "malformed_token"),
}


@pytest.fixture(scope="module")
def reader_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})


@pytest.fixture(scope="module")
def admin_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="root", claims={"roles": ["admin"]})


def test_valid_token_reaches_upstream_with_identity_and_without_authorization(
        gateway: EnvoyProcess, reader_token: str) -> None:
    """A valid reader token gets 200; the upstream sees the subject and roles headers but no token."""
    response = gateway.get("/api/orders", reader_token)
    assert response.status == 200, response.body
    seen = response.json()["headers"]
    assert seen["x-extauth-subject"] == "alice"
    assert seen["x-extauth-roles"] == "reader"
    assert "authorization" not in seen


@pytest.mark.parametrize("make_token, reason", REJECTED_TOKENS.values(), ids=REJECTED_TOKENS.keys())
def test_bad_token_is_rejected_with_401_and_a_bearer_challenge(
        gateway: EnvoyProcess, certs: DevCerts, make_token, reason: str) -> None:
    """Each kind of bad token gets 401, an RFC 6750 challenge and a JSON body naming the reason."""
    response = gateway.get("/api/orders", make_token(certs))
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="extauth", error="invalid_token"')
    body = response.json()
    assert body["reason"] == reason and body["error"] == "unauthorized" and body["request_id"]


def test_missing_token_on_protected_route_is_401(gateway: EnvoyProcess) -> None:
    """No credentials on /api is a 401 with a bare Bearer challenge."""
    response = gateway.get("/api/orders")
    assert response.status == 401 and response.headers["www-authenticate"] == 'Bearer realm="extauth"'


def test_public_route_is_anonymous_and_spoofed_identity_is_stripped(gateway: EnvoyProcess) -> None:
    """/public needs no token, and a client-sent x-extauth-subject never reaches the upstream."""
    response = gateway.get("/public/hello", x_extauth_subject="admin")
    assert response.status == 200
    assert "x-extauth-subject" not in response.json()["headers"]


def test_reader_is_forbidden_on_admin_routes_and_admin_is_allowed(
        gateway: EnvoyProcess, reader_token: str, admin_token: str) -> None:
    """/admin needs role admin: reader gets 403 `forbidden`, admin gets 200."""
    denied = gateway.get("/admin/users", reader_token)
    assert denied.status == 403 and denied.json()["reason"] == "forbidden"
    assert gateway.get("/admin/users", admin_token).status == 200


def test_admin_inherits_reader(gateway: EnvoyProcess, admin_token: str) -> None:
    """Role inheritance through Envoy: admin ⊇ writer ⊇ reader, so admin may use /api."""
    assert gateway.get("/api/orders", admin_token).status == 200


def test_unmatched_path_is_denied(gateway: EnvoyProcess, admin_token: str) -> None:
    """A path no policy route names is 403 no_matching_route even for an admin."""
    response = gateway.get("/private/metrics", admin_token)
    assert response.status == 403 and response.json()["reason"] == "no_matching_route"


def test_dot_segments_are_normalised_before_authorization(gateway: EnvoyProcess) -> None:
    """`/public/../admin/users` is judged as /admin/users (Envoy normalises first), so it needs a token."""
    assert gateway.get("/public/../admin/users").status == 401


def test_escaped_slashes_are_rejected_by_envoy(gateway: EnvoyProcess) -> None:
    """`%2F` in a path is refused with 400 before any route or policy sees it."""
    assert gateway.get("/public/..%2Fadmin/users").status == 400


def test_each_decision_is_audited_once_without_the_token(
        gateway: EnvoyProcess, extauth: ExtauthProcess, reader_token: str) -> None:
    """One audit event per Check carries the request id the upstream saw, the decision and no token."""
    response = gateway.get("/api/orders/7?secret=1", reader_token)
    request_id = response.json()["headers"]["x-request-id"]
    deadline = time.monotonic() + 5
    while not (matching := [e for e in extauth.audit_events() if e["request_id"] == request_id]):
        assert time.monotonic() < deadline, "no audit event"
        time.sleep(0.05)
    assert len(matching) == 1
    event = matching[0]
    assert (event["decision"], event["status"], event["reason"], event["subject"]) == ("allow", 200, "ok", "alice")
    assert event["path"] == "/api/orders/7" and event["rule"] == "demo/api/readers-may-read"
    audit_text = extauth.audit_path.read_text()
    assert reader_token not in audit_text and reader_token.split(".")[2] not in audit_text
    assert "secret=1" not in audit_text
