"""µs per `PolicyEngine.authorize`, for the demo policy and for synthetic policies of 10 / 100 / 1000 routes.

The request is the one Envoy sends through the shipped bootstrap (pipeline_micro.py), with a verified principal
as the authenticator builds it, and a fresh `Request` view per call as in a Check (its own cost is subtracted).
Each synthetic service has an exact health route, a tenant-scoped template route (deny rule on a claim, roles,
tenant claim = `{tenant}`, an upstream header) and a prefix route; the request is for one of the last services,
so a linear first-match scan tries nearly every route first. The index keeps the cost flat; the last column
is what a linear scan over the same compiled routes costs just to find the route.
"""

import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from pipeline_micro import envoy_check_request, microseconds_per_call, repeated

from extauth.authorization.engine import PolicyEngine
from extauth.authorization.matching import compile_route
from extauth.clock import ManualClock
from extauth.documents.loader import load_policies
from extauth.identity.principal import Principal
from extauth.request import Request
from extauth.tools.synthetic import principal

DEMO = Path(__file__).parents[1] / "envoy" / "policies"
#: A whole Check through the pipeline costs about this much (pipeline_micro.py), for the share column.
CHECK_US = 450
#: Tuesday 11:00 in Berlin: inside the demo's office-hours window.
CLOCK = ManualClock(datetime.fromisoformat("2026-11-24T10:00:00+00:00").timestamp())
READER = principal("alice", ["reader"], {"tenant": "acme", "scope": "openid orders:read"})
ADMIN = principal("root", ["admin"])
SIZES = (10, 100, 1000)


class Row(NamedTuple):
    label: str
    routes: int
    authorize_us: float
    linear_scan_us: float | None
    rule: str | None


def synthetic_policy(routes: int) -> str:
    kinds = [
        "  - name: svc{n}-health\n    match: {{path: {{exact: /svc{n}/healthz}}, methods: [GET]}}\n    public: true\n",
        "  - name: svc{n}-orders\n"
        "    match: {{path: {{template: \"/svc{n}/tenants/{{tenant}}/orders/{{id}}\"}}}}\n"
        "    rules:\n"
        "      - {{name: no-suspended, effect: deny, when: {{claims: {{suspended: true}}}}}}\n"
        "      - name: tenant-readers\n"
        "        when: {{roles: [reader], params_match_claims: {{tenant: tenant}}}}\n"
        "        headers: {{x-tenant: \"{{tenant}}\"}}\n",
        "  - name: svc{n}-api\n    match: {{path: {{prefix: /svc{n}/}}}}\n"
        "    rules: [{{name: readers, when: {{roles: [reader], scopes: [\"orders:read\"]}}}}]\n",
    ]
    return ("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: synthetic}\n"
            "roles: {reader: [], writer: [reader], admin: [writer]}\nroutes:\n"
            + "".join(kinds[index % 3].format(n=index // 3) for index in range(routes)))


def measure(label: str, policy: Path, path: str, who: Principal, method: str = "GET",
            linear: bool = False) -> Row:
    policy_set = load_policies(policy)
    engine = PolicyEngine(policy_set, CLOCK)
    check = envoy_check_request(path, None)
    check.attributes.request.http.method = method
    decision = engine.authorize(Request(check), who)
    if not decision.allowed:
        raise RuntimeError(f"{label}: expected an allow, got {decision}")
    view_us = microseconds_per_call(repeated(lambda: Request(check)))
    authorize_us = microseconds_per_call(repeated(lambda: engine.authorize(Request(check), who))) - view_us
    routes = [compile_route(route.name, position, route.match) for position, route in
              enumerate(route for loaded in policy_set.documents for route in loaded.document.routes)]
    scan_us = None
    if linear:
        def scan() -> object:
            request = Request(check)
            return next(route for route in routes if route.match(request) is not None)
        scan_us = microseconds_per_call(repeated(scan)) - view_us
    return Row(label, len(routes), authorize_us, scan_us, decision.rule)


def main() -> int:
    rows = [
        measure("demo: GET /api/orders (reader)", DEMO, "/api/orders", READER),
        measure("demo: GET /api/tenants/acme/orders/7 (reader)", DEMO, "/api/tenants/acme/orders/7", READER),
        measure("demo: POST /admin/maintenance (office hours)", DEMO, "/admin/maintenance", ADMIN, "POST"),
    ]
    with tempfile.TemporaryDirectory() as work:
        for size in SIZES:
            policy = Path(work) / f"synthetic-{size}.yaml"
            policy.write_text(synthetic_policy(size))
            target = f"/svc{(size - 2) // 3}/tenants/acme/orders/7"
            rows.append(measure(f"synthetic: GET {target}", policy, target, READER, linear=True))
    print(f"PolicyEngine.authorize, µs per call, Request view excluded (Python {sys.version.split()[0]})\n")
    print(f"| {'case':<46} | routes | authorize µs | % of a Check | linear scan µs | deciding rule")
    print(f"|{'-' * 48}|-------:|-------------:|-------------:|---------------:|---")
    for row in rows:
        scan = f"{row.linear_scan_us:14.2f}" if row.linear_scan_us is not None else f"{'-':>14}"
        print(f"| {row.label:<46} | {row.routes:>6} | {row.authorize_us:12.2f} | "
              f"{100 * row.authorize_us / CHECK_US:11.1f}% | {scan} | {row.rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
