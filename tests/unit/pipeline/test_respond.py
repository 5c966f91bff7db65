"""Rendering decisions as CheckResponses: statuses, challenges, identity headers, sanitising."""

import json
from types import MappingProxyType

from google.rpc import code_pb2
from hypothesis import given
from hypothesis import strategies as st

from extauth.config.schema import DEFAULT_PROXY_HEADERS, ForwardConfig
from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.reasons import Reason
from extauth.respond import Responder, sanitize_header_value

ALICE = Principal(subject="alice", identity="alice", issuer="https://idp", provider="idp", key_id="k1",
                  roles=frozenset({"reader"}),
                  claims=MappingProxyType({"sub": "alice", "roles": ["reader", "auditor"], "tenant": "t1"}),
                  expires_at=None)
FORWARD = ForwardConfig(claim_headers={"x-extauth-roles": "roles", "x-extauth-tenant": "tenant"})


def headers_of(options) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}


def test_allow_forwards_identity_and_strips_authorization() -> None:
    """An allowed request carries subject and chosen claims upstream, and loses its Authorization header."""
    response = Responder(FORWARD).render(Decision(True, Reason.OK, principal=ALICE), "r1")
    assert response.status.code == code_pb2.OK
    assert headers_of(response.ok_response.headers) == {
        "x-extauth-subject": "alice", "x-extauth-issuer": "https://idp", "x-extauth-roles": "reader,auditor",
        "x-extauth-tenant": "t1"}
    assert set(response.ok_response.headers_to_remove) == {"authorization", *DEFAULT_PROXY_HEADERS}


def test_client_sent_identity_headers_are_removed_even_for_anonymous_requests() -> None:
    """A public-route request cannot smuggle its own x-extauth-subject to the upstream."""
    response = Responder(FORWARD).render(Decision(True, Reason.PUBLIC_ROUTE), "r1")
    assert set(response.ok_response.headers_to_remove) >= {"x-extauth-subject", "x-extauth-roles",
                                                           "x-extauth-tenant"}
    assert len(response.ok_response.headers) == 0


def test_authorization_kept_when_configured() -> None:
    """strip_authorization: false leaves the token for upstreams that verify it themselves."""
    response = Responder(ForwardConfig(strip_authorization=False)).render(Decision(True, Reason.OK, principal=ALICE),
                                                                          "r1")
    assert "authorization" not in response.ok_response.headers_to_remove


def test_invalid_token_is_401_with_rfc6750_challenge_and_json_body() -> None:
    """A bad token answers 401, `WWW-Authenticate: Bearer error="invalid_token"` and a JSON body."""
    decision = Decision.deny(Reason.TOKEN_EXPIRED, "the token has expired")
    response = Responder(FORWARD).render(decision, "req-42")
    denied = response.denied_response
    assert response.status.code == code_pb2.UNAUTHENTICATED and denied.status.code == 401
    assert headers_of(denied.headers)["www-authenticate"] == (
        'Bearer realm="extauth", error="invalid_token", error_description="the token has expired"')
    assert json.loads(denied.body) == {"error": "unauthorized", "reason": "token_expired", "request_id": "req-42"}


def test_missing_token_challenge_has_no_error_code() -> None:
    """RFC 6750 §3.1: a request without credentials gets a bare Bearer challenge."""
    response = Responder(FORWARD).render(Decision.deny(Reason.MISSING_TOKEN, "credentials are required"), "r")
    assert headers_of(response.denied_response.headers)["www-authenticate"] == 'Bearer realm="extauth"'


def test_forbidden_is_403_without_challenge_or_internals() -> None:
    """A policy denial is a 403 whose body names the reason code but not the rule or policy internals."""
    decision = Decision.deny(Reason.FORBIDDEN, "no rule allows this request", rule="p/r/x", route="p/r")
    response = Responder(FORWARD).render(decision, "r9")
    assert response.denied_response.status.code == 403
    assert "www-authenticate" not in headers_of(response.denied_response.headers)
    assert json.loads(response.denied_response.body) == {"error": "forbidden", "reason": "forbidden",
                                                         "request_id": "r9"}


def test_internal_error_is_500_and_not_ready_is_503() -> None:
    """Service-side failures are distinguishable from client failures by status."""
    responder = Responder(FORWARD)
    assert responder.render(Decision.deny(Reason.INTERNAL_ERROR, "x"), "r").denied_response.status.code == 500
    assert responder.render(Decision.deny(Reason.NOT_READY, "x"), "r").denied_response.status.code == 503


def test_hostile_claim_cannot_inject_headers() -> None:
    """A claim holding CR/LF or NUL is not forwarded at all (never altered), and the client's copy is removed."""
    hostile = Principal(subject="eve", identity="eve", issuer="i", provider="p", key_id=None, roles=frozenset(),
                        claims=MappingProxyType({"tenant": "t1\r\nx-admin: true\x00"}), expires_at=None)
    response = Responder(FORWARD).render(Decision(True, Reason.OK, principal=hostile), "r")
    assert "x-extauth-tenant" not in headers_of(response.ok_response.headers)
    assert "x-extauth-tenant" in response.ok_response.headers_to_remove


@given(st.text(max_size=3000), st.integers(min_value=16, max_value=2048))
def test_sanitized_values_never_contain_control_characters_or_exceed_the_bound(value: str, limit: int) -> None:
    """Whatever a claim holds, the header value has no control characters and fits the byte limit."""
    cleaned = sanitize_header_value(value, limit)
    assert len(cleaned.encode()) <= limit
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in cleaned)


def test_every_reason_code_renders_with_its_status() -> None:
    """No reason code can make rendering fail: each deny has a status Envoy accepts and a JSON error name."""
    responder = Responder(FORWARD)
    for reason in Reason:
        decision = Decision.deny(reason, "x")
        if decision.allowed or decision.status == 200:
            continue
        response = responder.render(decision, "r")
        assert response.denied_response.status.code == decision.status
        assert json.loads(response.denied_response.body)["reason"] == reason.value


def test_every_header_the_policy_owns_is_removed_unless_set_now() -> None:
    """Rule headers of the live policy that this decision did not set are removed (a spoofed `x-tenant` never
    survives an allow by a rule that sets only `x-other`); one it set is overwritten, not removed."""
    decision = Decision(True, Reason.OK, principal=ALICE, upstream_headers=[("x-other", "1")])
    response = Responder(FORWARD).render(decision, "r1", ("x-other", "x-support-agent", "x-tenant"))
    removed = set(response.ok_response.headers_to_remove)
    assert {"x-support-agent", "x-tenant", "x-forwarded-host", "x-original-url"} <= removed
    assert "x-other" not in removed and headers_of(response.ok_response.headers)["x-other"] == "1"


def test_owned_headers_follow_the_policy_passed_in() -> None:
    """The removal list is rebuilt when the live policy (its owned headers) changes, as after a reload."""
    responder = Responder(FORWARD)
    allow = Decision(True, Reason.PUBLIC_ROUTE)
    before = set(responder.render(allow, "r1", ("x-a",)).ok_response.headers_to_remove)
    after = set(responder.render(allow, "r2", ("x-b",)).ok_response.headers_to_remove)
    assert "x-a" in before and "x-b" not in before
    assert "x-b" in after and "x-a" not in after


def test_a_rule_header_that_is_not_header_safe_is_left_out_and_removed_never_altered() -> None:
    """A rendered rule value with control characters, padding or over the size limit is not sent cut or cleaned
    (two values could arrive as one); the client's copy of that header is removed all the same."""
    responder = Responder(ForwardConfig(max_header_value_bytes=16))
    for value in ("a\x1bb", " padded", "x" * 17):
        decision = Decision(True, Reason.OK, principal=ALICE, upstream_headers=[("x-agent", value)])
        response = responder.render(decision, "r1", ("x-agent",))
        assert "x-agent" not in headers_of(response.ok_response.headers)
        assert "x-agent" in response.ok_response.headers_to_remove


_SUBJECTS = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)


@given(principals=st.lists(st.tuples(_SUBJECTS, _SUBJECTS, st.sets(_SUBJECTS, max_size=3)), min_size=1, max_size=8),
       order=st.lists(st.integers(0, 7), max_size=30))
def test_each_principal_gets_its_own_identity_headers_however_often_and_in_whatever_order_it_returns(
        principals, order) -> None:
    """The responder keeps identity headers per Principal object: a principal seen again (as the token cache
    hands it back) or an equal-looking new one gets exactly what a fresh responder would render for it."""
    made = [Principal(subject=subject, identity=subject, issuer="https://idp", provider="idp", key_id="k1",
                      roles=frozenset(roles), claims=MappingProxyType({"sub": subject, "tenant": tenant,
                                                                        "roles": sorted(roles)}),
                      expires_at=None)
            for subject, tenant, roles in principals]
    responder = Responder(FORWARD)
    for index in [*range(len(made)), *(i % len(made) for i in order)]:
        decision = Decision(True, Reason.OK, principal=made[index])
        rendered = responder.render(decision, "r1").ok_response
        fresh = Responder(FORWARD).render(decision, "r1").ok_response
        assert rendered == fresh
        assert headers_of(rendered.headers)["x-extauth-subject"] == made[index].identity


def test_the_identity_cache_is_bounded(monkeypatch) -> None:
    """Past IDENTITY_CACHE_SIZE principals the responder starts over instead of growing."""
    monkeypatch.setattr("extauth.respond.IDENTITY_CACHE_SIZE", 4)
    responder = Responder(FORWARD)
    for n in range(10):
        principal = Principal(subject=f"u{n}", identity=f"u{n}", issuer="https://idp", provider="idp", key_id=None,
                              roles=frozenset(), claims=MappingProxyType({}), expires_at=None)
        response = responder.render(Decision(True, Reason.OK, principal=principal), "r1")
        assert headers_of(response.ok_response.headers)["x-extauth-subject"] == f"u{n}"
    assert len(responder._identity_by_principal) <= 4
