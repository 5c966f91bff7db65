"""A claim reaches the upstream as one text, whether `forward.claim_headers` or a rule's `{claims.x}` sends it."""

import functools
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.config.schema import ForwardConfig
from extauth.documents.loader import load_policies
from extauth.identity.principal import Principal
from extauth.request import Request
from extauth.respond import Responder
from extauth.tools.synthetic import check_request

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: p}
routes:
  - name: r
    rules:
      - name: everyone
        headers: {x-from-rule: "{claims.profile.tenant}"}
"""
FORWARD = ForwardConfig(claim_headers={"x-from-forward": "profile.tenant"})

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@functools.cache
def _engine() -> PolicyEngine:
    directory = Path(tempfile.mkdtemp())
    (directory / "policy.yaml").write_text(POLICY)
    return PolicyEngine(load_policies(directory / "policy.yaml"), ManualClock())


def _upstream_headers(claims: dict[str, Any]) -> dict[str, str]:
    principal = Principal(subject="alice", identity="alice", issuer="https://idp.example", provider="idp",
                          key_id=None, roles=frozenset(), claims=MappingProxyType(claims), expires_at=None)
    decision = _engine().authorize(Request(check_request("/")), principal)
    response = Responder(FORWARD).render(decision, "r")
    return {option.header.key: option.header.value for option in response.ok_response.headers}


@given(JSON_VALUES)
def test_a_claim_is_rendered_the_same_by_forward_and_by_a_rule_header(value: Any) -> None:
    """Both headers carry the same text for any JSON claim value at a dotted path, or both are left out."""
    headers = _upstream_headers({"profile": {"tenant": value}})
    assert headers.get("x-from-rule") == headers.get("x-from-forward")


def test_absent_and_null_claims_are_left_out() -> None:
    """A missing claim and a JSON null send no header on either path."""
    for claims in ({}, {"profile": {"tenant": None}}, {"profile": "not an object"}):
        headers = _upstream_headers(claims)
        assert "x-from-rule" not in headers and "x-from-forward" not in headers


def test_a_list_of_numbers_is_sent_as_json_on_both_paths() -> None:
    """`[1, 2]` arrives as `[1,2]` from forward and from a rule, where a rule used to send `1,2`."""
    headers = _upstream_headers({"profile": {"tenant": [1, 2]}})
    assert (headers["x-from-rule"], headers["x-from-forward"]) == ("[1,2]", "[1,2]")
