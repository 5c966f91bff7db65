"""Limits declared in policy files: keys, windows, role and schedule overrides, scopes, and the 429 response."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.ratelimit import Limit, MemoryStorage, RateLimiter
from extauth.ratelimit.phase import RateLimitPhase
from extauth.ratelimit.plan import CHECKS_CACHE_SIZE, RateLimitPlan
from extauth.reasons import Reason
from extauth.request import Request
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
          - {name: premium-quota, key: [subject], windows: [{requests: 1000, per: 1d}]}
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
      - {name: per-ip, key: [client_ip, header:x-api-key], windows: [{requests: 2, per: 10s}], shadow: true}
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())


@pytest.fixture
def policy(tmp_path: Path, clock: ManualClock):
    (tmp_path / "shop.yaml").write_text(POLICY)
    return compile_policy(tmp_path, clock)


def allowed(policy, path: str, who=None, **headers: str):
    request = Request(check_request(path, headers=headers))
    decision = policy.engine.authorize(request, who)
    assert decision.allowed, decision
    return request, decision


def windows(checks) -> list[tuple[str, int, float]]:
    return [(check.key, check.limit.limit, check.limit.period_seconds) for check in checks]


def test_route_limit_keys_by_subject_and_path_parameter_with_every_window(policy) -> None:
    """A free member gets both windows of the route limit, counted per subject and tenant."""
    request, decision = allowed(policy, "/tenants/acme/search", principal("alice", ["free"]))
    assert windows(policy.limits.checks_for(request, decision)) == [
        ("shop/search/per-subject|subject=alice|param:tenant=acme", 10, 1.0),
        ("shop/search/per-subject|subject=alice|param:tenant=acme", 100, 3600.0),
    ]


def test_role_override_and_rule_limits_apply_to_the_allowing_rule(policy) -> None:
    """A partner (inheriting premium) gets premium windows, plus the premium rule's own daily quota."""
    request, decision = allowed(policy, "/tenants/acme/search", principal("bob", ["partner"]))
    assert windows(policy.limits.checks_for(request, decision)) == [
        ("shop/search/per-subject|subject=bob|param:tenant=acme", 100, 1.0),
        ("shop/search/premium/premium-quota|subject=bob", 1000, 86400.0),
    ]


def test_schedule_override_follows_the_injected_clock(policy, clock: ManualClock) -> None:
    """At 03:00 Berlin time the night-time window replaces the default ones."""
    clock.set(datetime(2026, 11, 24, 3, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    request, decision = allowed(policy, "/tenants/acme/search", principal("alice", ["free"]))
    assert [check.limit for check in policy.limits.checks_for(request, decision)] == [Limit(50, 1.0)]


def test_one_bucket_gets_the_windows_of_whichever_override_fires_on_each_request(policy, clock: ManualClock) -> None:
    """Requests of one bucket key alternate between overrides (role, night time, none): each gets its own windows,
    never the ones an earlier request of the same key was given."""
    night = datetime(2026, 11, 24, 3, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    day = clock.now()
    expected = {("free", day): [10, 100], ("premium", day): [100, 1000], ("free", night): [50],
                ("premium", night): [100, 1000]}
    for roles, when in [*expected, *reversed(expected), *expected]:
        clock.set(when)
        request, decision = allowed(policy, "/tenants/acme/search", principal("alice", [roles]))
        checks = policy.limits.checks_for(request, decision)
        assert [check.limit.limit for check in checks] == expected[(roles, when)]
        assert checks[0].key == "shop/search/per-subject|subject=alice|param:tenant=acme"


def test_the_checks_kept_per_bucket_stay_bounded(policy) -> None:
    """More buckets than a compiled limit keeps never grow its store of checks past CHECKS_CACHE_SIZE."""
    compiled = policy.limits._by_scope["shop/search"][0]
    for number in range(CHECKS_CACHE_SIZE + 10):
        request, decision = allowed(policy, f"/tenants/t{number}/search", principal("alice", ["free"]))
        (first, _) = policy.limits.checks_for(request, decision)
        assert first.key.endswith(f"|param:tenant=t{number}")
        assert len(compiled._made) <= CHECKS_CACHE_SIZE


def test_header_key_values_are_hashed_never_stored(policy) -> None:
    """An API key used as a limit key appears only as a hash, so it never reaches Redis keys or audit events."""
    request, decision = allowed(policy, "/open/x", None, x_api_key="sk_live_secret")
    (check,) = policy.limits.checks_for(request, decision)
    assert "sk_live_secret" not in check.key and check.key.startswith("shop/open/per-ip|client_ip=192.0.2.10|")
    assert check.shadow


async def test_exceeding_a_limit_gives_429_with_retry_after_and_ratelimit_fields(policy, clock) -> None:
    """The 11th request in a second is a 429 with Retry-After, RateLimit-Policy and RateLimit."""
    phase = RateLimitPhase(RateLimiter(MemoryStorage(), clock))
    who = principal("carol", ["free"])
    for remaining in range(9, -1, -1):
        request, decision = allowed(policy, "/tenants/acme/search", who)
        decision = await phase.apply(policy.limits, request, decision)
        assert decision.allowed
        assert dict(decision.client_headers)["ratelimit"].endswith(f";r={remaining};t=1")
    request, decision = allowed(policy, "/tenants/acme/search", who)
    decision = await phase.apply(policy.limits, request, decision)
    headers = dict(decision.client_headers)
    assert (decision.allowed, decision.status, decision.reason) == (False, 429, Reason.RATE_LIMITED)
    assert headers["retry-after"] == "1"
    assert headers["ratelimit-policy"] == '"per-subject/10per1s";q=10;w=1, "per-subject/100per3600s";q=100;w=3600'
    assert decision.rate_limit["remaining"] == 0 and decision.upstream_headers == []


async def test_shadow_limits_report_but_never_reject(policy, clock) -> None:
    """A shadow limit over its quota still allows, and the audit info lists the would-be rejection."""
    phase = RateLimitPhase(RateLimiter(MemoryStorage(), clock))
    for _ in range(3):
        request, decision = allowed(policy, "/open/x")
        decision = await phase.apply(policy.limits, request, decision)
    assert decision.allowed and decision.rate_limit["shadow_rejections"]


async def test_store_down_with_closed_limits_is_503(tmp_path: Path, clock) -> None:
    """A limit declared failure_mode: closed answers 503 rate_limit_unavailable when its store is down."""
    (tmp_path / "p.yaml").write_text(POLICY.replace("shadow: true", "failure_mode: closed"))
    policy = compile_policy(tmp_path, clock)
    phase = RateLimitPhase(RateLimiter(await _dead_redis(), clock, timeout_ms=50))
    request, decision = allowed(policy, "/open/x")
    decision = await phase.apply(policy.limits, request, decision)
    assert (decision.status, decision.reason) == (503, Reason.RATE_LIMIT_UNAVAILABLE)
    assert decision.rate_limit["degraded"] is True


async def _dead_redis():
    from extauth.devstack.redis import free_port
    from extauth.ratelimit import open_storage

    return open_storage(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=50, connect_timeout_ms=50)


BAD_LIMITS = {
    "bad duration": ("windows: [{requests: 5, per: 10 seconds}]",
                     "windows[0].per: '10 seconds' is not a duration such as 500ms, 10s, 5m, 1h or 1d"),
    "bad key part": ("key: [user]", "key[0]: 'user' is not a key part: use one of subject, issuer, client_ip, "
                                    "route, method, host, peer, or claim:NAME, param:NAME, header:NAME, "
                                    "context:NAME"),
    "unknown path parameter": ("key: [param:tenant]", "key[0]: the route's path has no parameter 'tenant'"),
    "undefined role in override": ("overrides: [{when: {roles: [vip]}, windows: [{requests: 1, per: 1s}]}]",
                                   "overrides[0].when.roles: undefined role 'vip' (declare it under roles:)"),
}


@pytest.mark.parametrize("fragment, message", BAD_LIMITS.values(), ids=BAD_LIMITS.keys())
def test_limit_errors_name_file_line_and_field(tmp_path: Path, fragment: str, message: str) -> None:
    """A broken limit is rejected at load with `file:line: field: message`."""
    limit = {"name": "l", "key": "[subject]", "windows": "[{requests: 5, per: 10s}]"}
    field = fragment.split(":")[0]
    limit[field] = fragment.partition(": ")[2]
    body = "\n".join(f"      {name}: {value}" for name, value in limit.items()).replace("      name", "    - name", 1)
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroles: {reader: []}\nroutes:\n"
                    "  - name: r\n    public: true\n    limits:\n" + body + "\n")
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    line = 9 + list(limit).index(field)
    assert str(raised.value) == f"{path}:{line}: routes[0].limits[0].{message}"


def test_plan_is_empty_without_limits(tmp_path: Path, clock) -> None:
    """A policy without limits compiles to an empty plan, so the Check path skips the phase entirely."""
    (tmp_path / "p.yaml").write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
                                     "routes:\n  - {name: r, public: true}\n")
    assert not RateLimitPlan(load_policies(tmp_path), clock)


def test_envoy_context_extensions_can_key_a_limit(tmp_path: Path, clock: ManualClock) -> None:
    """`context:service` counts per service named in the Envoy route, so one limit can cover many routes."""
    (tmp_path / "p.yaml").write_text(
        "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - name: r\n    public: true\n"
        "    limits:\n      - {name: per-service, key: [context:service], windows: [{requests: 5, per: 1s}]}\n")
    policy = compile_policy(tmp_path, clock)
    request = Request(check_request("/x", context_extensions={"service": "orders"}))
    decision = policy.engine.authorize(request, None)
    (check,) = policy.limits.checks_for(request, decision)
    assert check.key == "p/r/per-service|context:service=orders"
