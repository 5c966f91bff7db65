"""Which rate limits apply, worked out without counting: `RateLimitPlan.applicable` and `limits:` in policy tests."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.clock import ManualClock
from extauth.config import ConfigError
from extauth.request import Request
from extauth.tools.policy_tests import run_policy_tests
from extauth.tools.synthetic import check_request, principal

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: shop}
roles: {free: [], premium: [], partner: [premium]}
routes:
  - name: search
    match: {path: {template: "/tenants/{tenant}/search"}}
    rules:
      - name: members
        when: {roles: [free]}
      - name: premium
        when: {roles: [premium]}
        limits:
          - {name: premium-quota, public_name: quota, key: [subject], windows: [{requests: 1000, per: 1d}], cost: 2}
    limits:
      - name: per-subject
        key: [subject, param:tenant]
        windows: [{requests: 10, per: 1s}, {requests: 100, per: 1h}]
        overrides:
          - when: {roles: [premium]}
            windows: [{requests: 100, per: 1s}]
          - when: {time: {timezone: Europe/Berlin, between: ["00:00", "06:00"]}}
            windows: [{requests: 50, per: 1s}]
  - name: open
    match: {path: {prefix: /open}}
    public: true
    limits:
      - {name: per-ip, key: [client_ip], windows: [{requests: 2, per: 10s}], shadow: true, failure_mode: open}
"""
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


@pytest.fixture
def policy(tmp_path: Path) -> CompiledPolicy:
    (tmp_path / "shop.yaml").write_text(POLICY)
    return compile_policy(tmp_path, ManualClock(NOON))


def _applied(policy: CompiledPolicy, path: str, roles: list[str]) -> tuple[object, ...]:
    request = Request(check_request(path))
    decision = policy.engine.authorize(request, principal("alice", roles) if roles else None)
    return policy.limits.applicable(request, decision), policy.limits.checks_for(request, decision)


@given(roles=st.lists(st.sampled_from(["free", "premium", "partner"]), unique=True, min_size=1),
       hour=st.integers(0, 23), tenant=st.text(min_size=1, max_size=12))
def test_applicable_limits_are_exactly_what_would_be_counted(tmp_path_factory: pytest.TempPathFactory,
                                                             roles: list[str], hour: int, tenant: str) -> None:
    """For any caller, time and tenant, the limits shown (key, windows, cost, mode) are those the phase counts."""
    directory = tmp_path_factory.mktemp("p")
    (directory / "shop.yaml").write_text(POLICY)
    clock = ManualClock(datetime(2026, 11, 24, hour, 30, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    policy = compile_policy(directory, clock)
    request = Request(check_request(f"/tenants/{tenant.replace('/', '_').replace('?', '_')}/search"))
    decision = policy.engine.authorize(request, principal("alice", roles))
    if not decision.allowed:
        return  # a tenant the canonical path refuses (`;`, dot segments): no limits apply to a deny
    shown = [(limit.key, window, limit.cost, limit.failure_mode, limit.shadow, limit.public_name)
             for limit in policy.limits.applicable(request, decision) for window in limit.windows]
    counted = [(check.key, check.limit, check.cost, check.failure_mode, check.shadow, check.public_name)
               for check in policy.limits.checks_for(request, decision)]
    assert shown == counted


def test_the_override_that_fired_is_named(policy: CompiledPolicy) -> None:
    """A premium caller's route limit says which override fired; a free caller's says none of the two did."""
    premium, _ = _applied(policy, "/tenants/acme/search", ["premium"])
    assert [limit.describe() for limit in premium] == [
        'shop/search/per-subject (public "per-subject"): key shop/search/per-subject|subject=alice|param:tenant=acme,'
        " 100 per 1s, failure mode local, override overrides[0] fired",
        'shop/search/premium/premium-quota (public "quota"): key shop/search/premium/premium-quota|subject=alice,'
        " 1000 per 86400s, failure mode local, cost 2",
    ]
    free, _ = _applied(policy, "/tenants/acme/search", ["free"])
    assert [limit.override for limit in free] == [None]
    assert free[0].describe().endswith("10 per 1s and 100 per 3600s, failure mode local, none of 2 overrides fired")


def test_a_public_route_limit_is_shown_for_an_anonymous_caller(policy: CompiledPolicy) -> None:
    """Route limits apply to public routes too: keyed by client address, shadow and fail-open shown."""
    [limit], _ = _applied(policy, "/open/x", [])
    assert limit.describe() == ('shop/open/per-ip (public "per-ip"): key shop/open/per-ip|client_ip=192.0.2.10, '
                                "2 per 10s, failure mode open, shadow (counted, not enforced)")


CASES = """\
apiVersion: extauth/v1
kind: PolicyTest
metadata: {name: limits}
cases:
  - name: premium callers get the quota too
    request: {url: /tenants/acme/search}
    principal: {sub: alice, roles: [premium]}
    at: "2026-11-24T12:00:00+01:00"
    expect:
      decision: allow
      limits:
        - {name: shop/search/per-subject, key: "shop/search/per-subject|subject=alice|param:tenant=acme"}
        - shop/search/premium/premium-quota
  - name: denied requests count against nothing
    request: {url: /nowhere}
    expect: {decision: deny, limits: []}
"""


def _run(tmp_path: Path, cases: str) -> list[str | None]:
    (tmp_path / "shop.yaml").write_text(POLICY)
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "limits.yaml").write_text(cases)
    return [result.failure for result in run_policy_tests(tmp_path)]


def test_policy_tests_assert_limit_names_and_keys(tmp_path: Path) -> None:
    """Cases naming exactly the limits that apply (and their keys) pass; `limits: []` asserts none."""
    assert _run(tmp_path, CASES) == [None, None]


def test_a_missing_extra_or_wrongly_keyed_limit_fails_the_case(tmp_path: Path) -> None:
    """A wrong set of limit ids, or a key built otherwise, is a failure naming what differed."""
    wrong = CASES.replace("        - shop/search/premium/premium-quota\n", "").replace(
        "param:tenant=acme", "param:tenant=umbrella").replace("limits: []", "limits: [shop/open/per-ip]")
    first, second = _run(tmp_path, wrong)
    assert first == ("limits expected ['shop/search/per-subject'], got "
                     "['shop/search/per-subject', 'shop/search/premium/premium-quota']")
    assert second == "limits expected ['shop/open/per-ip'], got []"
    keyed = CASES.replace("param:tenant=acme", "param:tenant=umbrella")
    assert _run(tmp_path, keyed)[0] == (
        "limit shop/search/per-subject key expected 'shop/search/per-subject|subject=alice|param:tenant=umbrella', "
        "got 'shop/search/per-subject|subject=alice|param:tenant=acme'")


def test_an_unknown_field_in_a_limit_expectation_is_a_load_error(tmp_path: Path) -> None:
    """`limits: [{name, windows}]` is refused with file:line (only names and keys are asserted)."""
    with pytest.raises(ConfigError) as raised:
        _run(tmp_path, CASES.replace("- shop/search/premium/premium-quota",
                                     "- {name: shop/search/premium/premium-quota, windows: 1}"))
    [issue] = raised.value.issues
    assert (issue.line, issue.field, issue.message) == (
        13, "cases[0].expect.limits[1].windows", "unknown field")
