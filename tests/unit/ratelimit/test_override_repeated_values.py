"""A limit override's header and query conditions hold only when every value matches, like an allow rule's."""

from pathlib import Path

import pytest

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: shop}
roles: {member: []}
routes:
  - name: search
    match: {path: {prefix: /search}}
    rules:
      - {name: members, when: {roles: [member]}}
    limits:
      - name: per-subject
        key: [subject]
        windows: [{requests: 10, per: 1s}]
        overrides:
          - when: {headers: {x-plan: gold}}
            windows: [{requests: 100, per: 1s}]
          - when: {query: {tier: batch}}
            windows: [{requests: 1, per: 1s}]
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    directory = Path(tmp_path_factory.mktemp("overrides"))
    (directory / "shop.yaml").write_text(POLICY)
    return compile_policy(directory, ManualClock())


@pytest.mark.parametrize("path, plan, requests", [
    ("/search", "gold", 100),
    ("/search", " gold , gold", 100),
    ("/search", "gold,free", 10),
    ("/search", "free", 10),
    ("/search?tier=batch&TIER=batch", "", 1),
    ("/search?tier=batch&tier=online", "", 10),
    ("/search?Tier=batch", "", 10),
])
def test_override_applies_only_when_every_value_matches(policy, path: str, plan: str, requests: int) -> None:
    """`gold` alone (however padded or repeated) gets the gold window; `gold,free` and other mixes do not."""
    request = Request(check_request(path, headers={"x-plan": plan} if plan else {}))
    decision = policy.engine.authorize(request, principal("alice", ["member"]))
    assert decision.allowed
    assert [check.limit.limit for check in policy.limits.checks_for(request, decision)] == [requests]
