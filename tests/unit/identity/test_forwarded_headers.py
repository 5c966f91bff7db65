"""Identity headers for the upstream: exactly what authentication vouched for, or nothing; never an altered value."""

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauth.config.schema import ForwardConfig
from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.reasons import Reason
from extauth.respond import Responder, sanitize_header_value

FORWARD = ForwardConfig(roles_header="x-extauth-roles", groups_header="x-extauth-groups",
                        claim_headers={"x-extauth-realm-roles": "realm_access.roles", "x-extauth-tenant": "tenant",
                                       "x-extauth-url-claim": "https://example.com/tenant"},
                        max_header_value_bytes=32)


def forwarded(claims: dict[str, Any], forward: ForwardConfig = FORWARD, **fields: Any) -> dict[str, str]:
    principal = Principal(**{"subject": "root", "identity": "partner:root", "issuer": "https://partner.example",
                             "provider": "partner", "key_id": None, "roles": frozenset(),
                             "claims": MappingProxyType(claims), "expires_at": None, **fields})
    response = Responder(forward).render(Decision(True, Reason.OK, principal=principal), "r")
    return {option.header.key: option.header.value for option in response.ok_response.headers}


def test_subject_header_carries_the_identity_and_issuer_header_is_on_by_default() -> None:
    """Upstream sees `partner:root` and the partner's issuer, so it cannot mistake the caller for corp's root."""
    headers = forwarded({}, ForwardConfig())
    assert headers == {"x-extauth-subject": "partner:root", "x-extauth-issuer": "https://partner.example"}


def test_dotted_claim_paths_and_literal_claim_names_are_forwarded() -> None:
    """`realm_access.roles` walks into the object; a claim literally named with dots or slashes is found as is."""
    headers = forwarded({"realm_access": {"roles": ["a", "b"]}, "https://example.com/tenant": "acme"})
    assert headers["x-extauth-realm-roles"] == "a,b" and headers["x-extauth-url-claim"] == "acme"


def test_roles_and_groups_headers_carry_the_trusted_sets_not_the_claims() -> None:
    """x-extauth-roles is what authorization used (from the trusted claim), never the token's `roles` as sent."""
    headers = forwarded({"roles": ["admin"], "groups": ["admins"]}, roles=frozenset({"reader", "auditor"}),
                        groups=frozenset({"Domain Users"}))
    assert (headers["x-extauth-roles"], headers["x-extauth-groups"]) == ("auditor,reader", "Domain Users")
    assert "x-extauth-roles" not in forwarded({"roles": ["admin"]})


@pytest.mark.parametrize(("first", "second"), [
    (["a,b"], ["a", "b"]), (["a,b", "c"], ["a", "b,c"]), ([1, 2], ["1", "2"]), ([["a", "b"]], ["a", "b"]),
])
def test_distinct_lists_are_forwarded_distinctly(first: Any, second: Any) -> None:
    """A list is comma-joined only when that is reversible (strings without commas), else sent as JSON, so one
    role `a,b` never arrives as the two roles `a` and `b`."""
    assert forwarded({"tenant": first})["x-extauth-tenant"] != forwarded({"tenant": second}).get("x-extauth-tenant")


@pytest.mark.parametrize("value", ["acme\r\nx-admin: 1", "acme\x00", " acme", "acme ", "a" * 33, ["a\n"]])
def test_a_claim_that_would_need_sanitising_is_not_forwarded_and_the_client_copy_is_removed(value: Any) -> None:
    """Control characters, surrounding whitespace or an over-long value: the header is left out (like a missing
    claim), and the client's own copy of it is still removed."""
    principal = Principal(subject="root", identity="root", issuer="i", provider="p", key_id=None, roles=frozenset(),
                          claims=MappingProxyType({"tenant": value}), expires_at=None)
    response = Responder(FORWARD).render(Decision(True, Reason.OK, principal=principal), "r")
    assert "x-extauth-tenant" not in {option.header.key for option in response.ok_response.headers}
    assert "x-extauth-tenant" in response.ok_response.headers_to_remove


def test_every_forwarded_header_name_is_removed_from_anonymous_requests() -> None:
    """Subject, issuer, roles, groups and claim headers: a public-route request cannot bring its own."""
    response = Responder(FORWARD).render(Decision(True, Reason.PUBLIC_ROUTE), "r")
    assert set(response.ok_response.headers_to_remove) >= {
        "x-extauth-subject", "x-extauth-issuer", "x-extauth-roles", "x-extauth-groups", "x-extauth-realm-roles",
        "x-extauth-tenant", "x-extauth-url-claim"}


CLAIM_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@given(CLAIM_VALUES)
def test_a_forwarded_claim_is_always_header_safe_and_unaltered(value: Any) -> None:
    """Whatever a claim holds, its header is absent or a value the sanitiser would leave exactly as it is."""
    headers = forwarded({"tenant": value})
    if "x-extauth-tenant" in headers:
        text = headers["x-extauth-tenant"]
        assert sanitize_header_value(text, 32) == text
        if isinstance(value, str):
            assert text == value
