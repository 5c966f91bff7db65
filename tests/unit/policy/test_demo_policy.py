"""The demo policy (`envoy/policies/demo.yaml`) keeps the contract README and `make run` describe."""

from datetime import datetime
from pathlib import Path

import pytest

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.documents.loader import load_policies
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

DEMO = Path(__file__).parents[3] / "envoy" / "policies"
#: Tuesday 11:00 in Berlin.
CLOCK = ManualClock(datetime.fromisoformat("2026-11-24T10:00:00+00:00").timestamp())
ENGINE = PolicyEngine(load_policies(DEMO), CLOCK)

ALICE = principal("alice", ["reader"], {"tenant": "acme"})
WRITER = principal("wendy", ["writer"], {"tenant": "acme"})
SUPPORT = principal("sam", ["support"])
ROOT = principal("root", ["admin"])


@pytest.mark.parametrize("who, method, path, expected", [
    (None, "GET", "/public/hello", (200, "public_route", "demo/public")),
    (None, "HEAD", "/healthz", (200, "public_route", "demo/health")),
    (None, "GET", "/api/orders", (401, "missing_token", None)),
    (ALICE, "GET", "/api/orders", (200, "ok", "demo/api/readers-may-read")),
    (ROOT, "GET", "/api/orders", (200, "ok", "demo/api/readers-may-read")),
    (ALICE, "POST", "/api/orders", (403, "forbidden", None)),
    (WRITER, "POST", "/api/orders", (200, "ok", "demo/api-write/writers-may-write")),
    (ALICE, "GET", "/api/tenants/acme/orders/7", (200, "ok", "demo/tenant-orders-read/readers-of-the-tenant")),
    (ALICE, "GET", "/api/tenants/globex/orders", (403, "forbidden", None)),
    (SUPPORT, "GET", "/api/tenants/globex/orders", (200, "ok", "demo/tenant-orders-read/support-reads-any-tenant")),
    (SUPPORT, "DELETE", "/api/tenants/globex/orders/1", (403, "forbidden", None)),
    (ALICE, "POST", "/api/tenants/acme/orders", (403, "forbidden", None)),
    (WRITER, "POST", "/api/tenants/acme/orders", (200, "ok", "demo/tenant-orders-write/writers-of-the-tenant")),
    (ALICE, "GET", "/admin/users", (403, "forbidden", None)),
    (ROOT, "GET", "/admin/users", (200, "ok", "demo/admin/admins-only")),
    (ROOT, "POST", "/admin/maintenance", (200, "ok", "demo/admin-maintenance/admins-in-office-hours")),
    (ROOT, "GET", "/private/metrics", (403, "no_matching_route", None)),
    (ROOT, "POST", "/healthz", (405, "method_not_allowed", None)),
    # The bypass classes of docs/security.md, decided on the canonical request:
    (ALICE, "GET", "/api/tenants/umbrella/orders/1", (403, "forbidden", None)),
    (ALICE, "GET", "/api/Tenants/umbrella/orders/1", (403, "forbidden", None)),
    (ALICE, "GET", "/API/TENANTS/umbrella/ORDERS/1", (403, "forbidden", None)),
    (ALICE, "GET", "/api/tenants/umbrella/orders.json", (403, "forbidden", None)),
    (ALICE, "GET", "/api/tenants/umbrella/orders/", (403, "forbidden", None)),
    (ALICE, "GET", "/api/tenants/%75mbrella/orders/1", (403, "forbidden", None)),
    (ALICE, "OPTIONS", "/api/tenants/umbrella/orders/1", (405, "method_not_allowed", None)),
    (ALICE, "HEAD", "/api/tenants/acme/orders/1", (200, "ok", "demo/tenant-orders-read/readers-of-the-tenant")),
    (ALICE, "HEAD", "/api/limited", (200, "ok", "demo/limited/readers-may-read")),
    (ROOT, "GET", "/admin/maintenance", (405, "method_not_allowed", None)),
])
def test_demo_policy_decisions(who, method: str, path: str, expected: tuple) -> None:
    """Anonymous /public, reader /api (tenant-scoped orders, writes for writers), admin /admin, else denied."""
    decision = ENGINE.authorize(Request(check_request(path, method)), who)
    assert (decision.status, decision.reason, decision.rule if decision.allowed else None) == expected


def test_demo_maintenance_is_refused_outside_office_hours() -> None:
    """POST /admin/maintenance at 19:00 Berlin time is forbidden even for an admin."""
    clock = ManualClock(datetime.fromisoformat("2026-11-24T18:00:00+00:00").timestamp())
    engine = PolicyEngine(load_policies(DEMO), clock)
    assert engine.authorize(Request(check_request("/admin/maintenance", "POST")), ROOT).reason == "forbidden"


def test_demo_tenant_routes_tell_the_upstream_the_tenant() -> None:
    """An allowed tenant-scoped request carries `x-tenant` from the path."""
    decision = ENGINE.authorize(Request(check_request("/api/tenants/acme/orders/7")), ALICE)
    assert decision.upstream_headers == [("x-tenant", "acme")]
