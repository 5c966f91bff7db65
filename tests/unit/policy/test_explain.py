"""`PolicyEngine.explain`: every route tried, the deciding route's rules, and the decision."""

from support.inline_policy import MakeEngine

from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

ROUTES = """\
routes:
  - name: health
    match: {path: {exact: /healthz}}
    public: true
  - name: orders
    match: {path: {template: "/tenants/{tenant}/orders"}, methods: [GET]}
    rules:
      - name: no-interns
        effect: deny
        when: {groups: [interns]}
      - name: same-tenant
        when: {roles: [reader], params_match_claims: {tenant: tenant}}
      - name: support
        when: {roles: [admin]}
  - name: everything-else
    match: {path: {prefix: /}}
    rules:
      - {name: admins, when: {roles: [admin]}}
"""


def test_explain_traces_routes_and_rules(make_engine: MakeEngine) -> None:
    """Each route says whether it matched and why not; each rule of the deciding route says the same."""
    engine = make_engine(ROUTES)
    request = Request(check_request("/tenants/acme/orders"))
    explanation = engine.explain(request, principal("bob", ["reader"], {"tenant": "globex"}))
    assert explanation.decision.reason == "forbidden"
    assert explanation.params == {"tenant": "acme"}
    assert explanation.lines() == [
        "route p/health: no: path /tenants/acme/orders does not match exact /healthz",
        "route p/orders: matched (decides)",
        "  ├ rule p/orders/no-interns (deny): not matched: groups: groups claim [] include none of ['interns']",
        "  ├ rule p/orders/same-tenant (allow): not matched: params_match_claims.tenant: "
        "path parameter tenant is 'acme' but claim tenant is 'globex'",
        "  └ rule p/orders/support (allow): not matched: roles: roles ['reader'] include none of ['admin'] "
        "nor a role inheriting one",
        "route p/everything-else: matched (less specific)",
        "params: tenant=acme",
        "decision: deny 403 forbidden (rule -)",
    ]


def test_explain_names_the_failing_route_part(make_engine: MakeEngine) -> None:
    """A route that fails on its method says so, and no route matching means default deny."""
    engine = make_engine(ROUTES.replace("prefix: /}", "prefix: /other/}"))
    explanation = engine.explain(Request(check_request("/tenants/acme/other")), None)
    assert [(trace.route, trace.matched, trace.why) for trace in explanation.routes] == [
        ("p/health", False, "path /tenants/acme/other does not match exact /healthz"),
        ("p/orders", False, "path /tenants/acme/other does not match template /tenants/{tenant}/orders"),
        ("p/everything-else", False, "path /tenants/acme/other does not match prefix /other/"),
    ]
    assert explanation.decision.reason == "no_matching_route" and explanation.rules == ()


def test_explain_shows_that_a_method_mismatch_is_405_not_a_broader_route(make_engine: MakeEngine) -> None:
    """POST on a resource whose most specific route admits only GET is 405, and the trace says the broader
    catch-all was not consulted although it matches."""
    explanation = make_engine(ROUTES).explain(Request(check_request("/tenants/acme/orders", "POST")),
                                              principal("root", ["admin"]))
    assert explanation.decision.reason == "method_not_allowed" and explanation.decision.status == 405
    assert dict(explanation.decision.client_headers) == {"allow": "GET, HEAD"}
    assert explanation.lines() == [
        "route p/health: no: path /tenants/acme/orders does not match exact /healthz",
        "route p/orders: no: method POST is not one of GET",
        "route p/everything-else: matched (less specific)",
        "the most specific matching resource (p/orders) does not admit this method; broader routes are not consulted",
        "decision: deny 405 method_not_allowed (rule p/orders)",
    ]


def test_explanation_carries_the_same_decision_as_authorize(make_engine: MakeEngine) -> None:
    """explain decides exactly as authorize does, including the rule and the upstream headers."""
    engine = make_engine(ROUTES)
    request = Request(check_request("/tenants/acme/orders"))
    who = principal("ann", ["reader"], {"tenant": "acme"})
    explanation = engine.explain(request, who)
    assert explanation.decision == engine.authorize(request, who)
    assert [rule.matched for rule in explanation.rules] == [False, True, False]


def test_anonymous_request_on_a_protected_route_evaluates_no_rule(make_engine: MakeEngine) -> None:
    """Without credentials the decision is missing_token and the rules are reported as not evaluated."""
    explanation = make_engine(ROUTES).explain(Request(check_request("/tenants/acme/orders")), None)
    assert explanation.decision.reason == "missing_token"
    assert {rule.why for rule in explanation.rules} == {"not evaluated: no credentials"}
