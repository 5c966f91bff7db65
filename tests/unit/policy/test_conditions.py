"""Each `when` condition, matching and not matching."""

import pytest
from support.inline_policy import MakeEngine, decide

from extauth.reasons import Reason
from extauth.tools.synthetic import principal


def rule_with(when: str) -> str:
    return f"routes:\n  - name: r\n    rules:\n      - name: x\n        when: {when}\n"


CASES = {
    # name: (when, allowed (principal, request details), denied (principal, request details))
    "subjects": ("{subjects: [alice]}", (principal("alice"), {}), (principal("bob"), {})),
    "issuers": ("{issuers: ['https://a']}", (principal("u", issuer="https://a"), {}),
                (principal("u", issuer="https://b"), {})),
    "groups": ("{groups: [ops]}", (principal("u", claims={"groups": ["dev", "ops"]}), {}),
               (principal("u", claims={"groups": ["dev"]}), {})),
    "groups as one string": ("{groups: [ops]}", (principal("u", claims={"groups": "ops"}), {}),
                             (principal("u"), {})),
    "scope string": ("{scopes: ['orders:write']}",
                     (principal("u", claims={"scope": "openid orders:write"}), {}),
                     (principal("u", claims={"scope": "openid orders:read"}), {})),
    "scp list": ("{scopes: ['orders:write']}", (principal("u", claims={"scp": ["orders:write"]}), {}),
                 (principal("u", claims={"scp": ["orders:read"]}), {})),
    "claim value": ("{claims: {plan: gold}}", (principal("u", claims={"plan": "gold"}), {}),
                    (principal("u", claims={"plan": "free"}), {})),
    "claim alternatives": ("{claims: {plan: [gold, silver]}}", (principal("u", claims={"plan": "silver"}), {}),
                           (principal("u"), {})),
    "dotted claim in a list": ("{claims: {realm_access.roles: ops}}",
                               (principal("u", claims={"realm_access": {"roles": ["x", "ops"]}}), {}),
                               (principal("u", claims={"realm_access": ["ops"]}), {})),
    "boolean claim is not the number 1": ("{claims: {email_verified: true}}",
                                          (principal("u", claims={"email_verified": True}), {}),
                                          (principal("u", claims={"email_verified": 1}), {})),
    "peer exact": ("{peer: ['spiffe://corp/ns/shop/sa/api']}",
                   (principal("u"), {"peer": "spiffe://corp/ns/shop/sa/api"}),
                   (principal("u"), {"peer": "spiffe://corp/ns/shop/sa/api2"})),
    "peer prefix": ("{peer: ['spiffe://corp/ns/shop/*']}", (principal("u"), {"peer": "spiffe://corp/ns/shop/sa/x"}),
                    (principal("u"), {"peer": "spiffe://corp/ns/shopping/sa/x"})),
    "no peer certificate": ("{peer: ['spiffe://corp/*']}", (principal("u"), {"peer": "spiffe://corp/a"}),
                            (principal("u"), {})),
    "header value": ("{headers: {X-Client: [web, ios]}}", (principal("u"), {"headers": {"x-client": "ios"}}),
                     (principal("u"), {"headers": {"x-client": "android"}})),
    "header present": ("{headers: {x-debug: {present: true}}}", (principal("u"), {"headers": {"x-debug": ""}}),
                       (principal("u"), {})),
    "header absent": ("{headers: {x-debug: {present: false}}}", (principal("u"), {}),
                      (principal("u"), {"headers": {"x-debug": "1"}})),
    "header regex is a full match": ("{headers: {x-version: {regex: 'v[0-9]+'}}}",
                                     (principal("u"), {"headers": {"x-version": "v12"}}),
                                     (principal("u"), {"headers": {"x-version": "v12-beta"}})),
    "query value": ("{query: {format: json}}", (principal("u"), {"path": "/x?format=json"}),
                    (principal("u"), {"path": "/x?format=xml"})),
    "repeated query parameter": ("{query: {tag: [a, b]}}", (principal("u"), {"path": "/x?tag=b&tag=a"}),
                                 (principal("u"), {"path": "/x?tags=a"})),
    "query present": ("{query: {debug: {present: true}}}", (principal("u"), {"path": "/x?debug"}),
                      (principal("u"), {"path": "/x"})),
    "query regex": ("{query: {page: {regex: '[0-9]{1,3}'}}}", (principal("u"), {"path": "/x?page=12"}),
                    (principal("u"), {"path": "/x?page=1234"})),
    "cidr v4": ("{source_cidrs: [10.0.0.0/8, 192.168.1.0/24]}", (principal("u"), {"source": "192.168.1.77"}),
                (principal("u"), {"source": "192.168.2.1"})),
    "cidr v6": ("{source_cidrs: ['2001:db8::/32']}", (principal("u"), {"source": "2001:db8:1::5"}),
                (principal("u"), {"source": "2001:db9::5"})),
    "v4-mapped source in a v4 cidr": ("{source_cidrs: [10.0.0.0/8]}", (principal("u"), {"source": "::ffff:10.1.2.3"}),
                                      (principal("u"), {"source": "::ffff:11.1.2.3"})),
    "v4 source never in a v6 cidr": ("{source_cidrs: ['::/0']}", (principal("u"), {"source": "::1"}),
                                     (principal("u"), {"source": "127.0.0.1"})),
    "source that is not an address": ("{source_cidrs: [0.0.0.0/0]}", (principal("u"), {"source": "1.2.3.4"}),
                                      (principal("u"), {"source": ""})),
}


@pytest.mark.parametrize("when, allowed, denied", CASES.values(), ids=CASES.keys())
def test_condition_allows_only_matching_requests(make_engine: MakeEngine, when, allowed, denied) -> None:
    """A rule holds when its condition does, and the request is forbidden when it does not."""
    engine = make_engine(rule_with(when))
    for (who, details), expected in ((allowed, Reason.OK), (denied, Reason.FORBIDDEN)):
        details = dict(details)
        assert decide(engine, who, details.pop("path", "/x"), **details).reason is expected, (who, details)


def test_all_parts_of_a_condition_must_hold(make_engine: MakeEngine) -> None:
    """Roles and a header together: either one alone does not suffice."""
    engine = make_engine(rule_with("{roles: [writer], headers: {x-client: web}}"))
    web = {"headers": {"x-client": "web"}}
    assert decide(engine, principal("u", ["admin"]), "/x", **web).allowed
    assert not decide(engine, principal("u", ["reader"]), "/x", **web).allowed
    assert not decide(engine, principal("u", ["admin"]), "/x").allowed


TENANT_ROUTES = """\
routes:
  - name: orders
    match: {path: {template: "/tenants/{tenant}/users/{user}/orders"}}
    rules:
      - name: own-orders
        when: {params_match_claims: {tenant: org.id, user: sub}}
"""


@pytest.mark.parametrize("claims, subject, allowed", [
    ({"org": {"id": "acme"}}, "alice", True),
    ({"org": {"id": "acme"}}, "bob", False),
    ({"org": {"id": "globex"}}, "alice", False),
    ({}, "alice", False),
])
def test_owner_check_compares_path_parameters_with_claims(make_engine: MakeEngine, claims, subject, allowed) -> None:
    """`{tenant}` must equal the `org.id` claim and `{user}` the subject: another tenant's or user's data is 403."""
    engine = make_engine(TENANT_ROUTES)
    decision = decide(engine, principal(subject, claims=claims), "/tenants/acme/users/alice/orders")
    assert decision.allowed is allowed


def test_numeric_claim_matches_its_path_parameter(make_engine: MakeEngine) -> None:
    """A numeric tenant claim (`42`) equals the path text `42`."""
    engine = make_engine(TENANT_ROUTES)
    assert decide(engine, principal("7", claims={"org": {"id": 42}, "sub": 7}), "/tenants/42/users/7/orders").allowed
