"""Headers an allowing rule adds to the upstream request."""

from support.inline_policy import MakeEngine, decide

from extauth.tools.synthetic import principal

ROUTES = """\
routes:
  - name: orders
    match: {path: {template: "/tenants/{tenant}/orders/{id}"}}
    rules:
      - name: deny-blocked
        effect: deny
        when: {claims: {blocked: true}}
      - name: readers
        when: {roles: [reader]}
        headers:
          x-tenant: "{tenant}"
          x-order: "order-{id}"
          x-user: "{claims.sub} <{claims.profile.email}>"
          x-groups: "{claims.groups}"
      - name: everyone
        headers: {x-everyone: "yes"}
"""


def test_allowing_rule_adds_headers_with_params_and_claims(make_engine: MakeEngine) -> None:
    """`{param}` and `{claims.NAME}` (dotted, lists comma-joined) are filled in from the request and token."""
    who = principal("alice", ["reader"], {"profile": {"email": "a@example.com"}, "groups": ["ops", "dev"]})
    decision = decide(make_engine(ROUTES), who, "/tenants/acme/orders/7")
    assert decision.rule == "p/orders/readers"
    assert decision.upstream_headers == [("x-tenant", "acme"), ("x-order", "order-7"),
                                         ("x-user", "alice <a@example.com>"), ("x-groups", "ops,dev")]


def test_header_whose_claim_is_missing_is_left_out(make_engine: MakeEngine) -> None:
    """A header naming an absent claim is not sent at all rather than sent empty."""
    decision = decide(make_engine(ROUTES), principal("alice", ["reader"]), "/tenants/acme/orders/7")
    assert [name for name, _ in decision.upstream_headers] == ["x-tenant", "x-order"]


def test_only_the_deciding_rule_contributes_headers(make_engine: MakeEngine) -> None:
    """The first matching allow rule decides, and only its headers go upstream."""
    decision = decide(make_engine(ROUTES), principal("bob"), "/tenants/acme/orders/7")
    assert (decision.rule, decision.upstream_headers) == ("p/orders/everyone", [("x-everyone", "yes")])


def test_denied_request_gets_no_headers(make_engine: MakeEngine) -> None:
    """A matching deny rule wins and nothing is added."""
    decision = decide(make_engine(ROUTES), principal("eve", ["reader"], {"blocked": True}), "/tenants/a/orders/1")
    assert (decision.allowed, decision.upstream_headers) == (False, [])
