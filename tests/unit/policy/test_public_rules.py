"""A public route with rules: open to anonymous callers, but only for requests its principal-free rules allow."""

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.inline_policy import HEAD, MakeEngine, decide

from extauth.authorization.engine import PolicyEngine
from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

STRIPE = """\
routes:
  - name: stripe-webhooks
    match: {path: {exact: /billing/webhooks/stripe}, methods: [POST]}
    public: true
    rules:
      - name: from-stripe
        when: {source_cidrs: [3.18.12.0/23]}
      - name: not-while-paused
        effect: deny
        when: {headers: {x-paused: {present: true}}}
  - name: billing
    match: {path: {prefix: /billing}}
    rules:
      - {name: readers, when: {roles: [reader]}}
"""
STRIPE_NETWORK = ipaddress.ip_network("3.18.12.0/23")
ALICE = principal("alice", ["reader"])


def _webhook(engine: PolicyEngine, source: str, who: object = None, **details: object) -> object:
    return decide(engine, who, "/billing/webhooks/stripe", "POST", source=source, **details)  # type: ignore[arg-type]


def test_a_public_route_with_a_source_rule_admits_its_network_anonymously(make_engine: MakeEngine) -> None:
    """An anonymous POST from the provider's network is allowed as `public_route` by the allowing rule."""
    decision = _webhook(make_engine(STRIPE), "3.18.13.7")
    assert (decision.allowed, decision.reason, decision.rule) == (
        True, "public_route", "p/stripe-webhooks/from-stripe")


@given(address=st.ip_addresses(v=4))
def test_any_ipv4_source_is_admitted_exactly_when_it_is_in_the_network(tmp_path_factory: pytest.TempPathFactory,
                                                                        address: ipaddress.IPv4Address) -> None:
    """Every IPv4 address, anonymous or authenticated: allowed inside 3.18.12.0/23, 403 `forbidden` outside."""
    engine = _engine(tmp_path_factory.mktemp("p"), STRIPE)
    for who in (None, ALICE):
        decision = _webhook(engine, str(address), who)
        assert decision.allowed is (address in STRIPE_NETWORK)
        assert decision.reason == ("public_route" if address in STRIPE_NETWORK else "forbidden")


@given(address=st.ip_addresses(v=4))
def test_an_ipv4_mapped_ipv6_source_counts_as_its_ipv4_address(tmp_path_factory: pytest.TempPathFactory,
                                                                address: ipaddress.IPv4Address) -> None:
    """`::ffff:a.b.c.d` is decided as `a.b.c.d`, so the other spelling neither gains nor loses access."""
    engine = _engine(tmp_path_factory.mktemp("p"), STRIPE)
    assert _webhook(engine, f"::ffff:{address}").allowed is _webhook(engine, str(address)).allowed


@given(address=st.ip_addresses(v=6))
def test_an_ipv6_source_is_admitted_only_as_a_mapped_address_in_the_network(
        tmp_path_factory: pytest.TempPathFactory, address: ipaddress.IPv6Address) -> None:
    """Any IPv6 client is refused unless it is an IPv4-mapped address inside 3.18.12.0/23."""
    engine = _engine(tmp_path_factory.mktemp("p"), STRIPE)
    mapped = address.ipv4_mapped
    assert _webhook(engine, str(address)).allowed is (mapped is not None and mapped in STRIPE_NETWORK)


def test_a_token_does_not_widen_a_public_route_with_rules(make_engine: MakeEngine) -> None:
    """An authenticated caller from elsewhere is refused like an anonymous one (the rules read only the request)."""
    decision = _webhook(make_engine(STRIPE), "198.51.100.1", ALICE)
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, "forbidden")
    assert decision.principal is ALICE


def test_a_deny_rule_on_a_public_route_wins(make_engine: MakeEngine) -> None:
    """A matching deny rule refuses even a request from the allowed network."""
    decision = _webhook(make_engine(STRIPE), "3.18.12.1", headers={"x-paused": "1"})
    assert (decision.reason, decision.rule) == ("denied_by_rule", "p/stripe-webhooks/not-while-paused")


def test_a_public_route_without_rules_still_admits_anyone(make_engine: MakeEngine) -> None:
    """The plain `public: true` route is unchanged: anyone, from anywhere."""
    engine = make_engine("routes:\n  - {name: open, match: {path: {prefix: /}}, public: true}\n")
    decision = decide(engine, None, "/x", source="198.51.100.1")
    assert (decision.allowed, decision.reason, decision.rule) == (True, "public_route", "p/open")


def test_public_rules_on_headers_query_time_and_peer(make_engine: MakeEngine) -> None:
    """Every principal-free condition can gate a public route: here a header and a query value together."""
    engine = make_engine("""\
routes:
  - name: hooks
    match: {path: {prefix: /hooks}}
    public: true
    rules:
      - name: signed
        when: {headers: {x-signature: {present: true}}, query: {v: "2"}, peer: ["spiffe://corp/*"],
               time: {timezone: UTC, weekdays: [tue]}}
        headers: {x-hook: "{rest}"}
""".replace("prefix: /hooks", 'template: "/hooks/{rest...}"'))
    allowed = decide(engine, None, "/hooks/a?v=2", headers={"x-signature": "s"}, peer="spiffe://corp/x")
    assert (allowed.allowed, allowed.upstream_headers) == (True, [("x-hook", "a")])
    assert decide(engine, None, "/hooks/a?v=2", peer="spiffe://corp/x").reason == "forbidden"
    ambiguous = decide(engine, None, "/hooks/a?v=2&v=3", headers={"x-signature": "s"}, peer="spiffe://corp/x")
    assert ambiguous.reason == "ambiguous_request"


def test_explain_evaluates_public_rules_for_an_anonymous_caller(make_engine: MakeEngine) -> None:
    """explain shows why each rule of a public route failed, rather than `no credentials`."""
    explanation = make_engine(STRIPE).explain(
        Request(check_request("/billing/webhooks/stripe", "POST", source="198.51.100.1")), None)
    assert [(rule.matched, rule.why) for rule in explanation.rules] == [
        (False, "source_cidrs: source 198.51.100.1 is in none of ['3.18.12.0/23']"),
        (False, "headers.x-paused: none of ['(absent)'] is present"),
    ]


PRINCIPAL_PARTS = {
    "roles": "[reader]",
    "subjects": "[alice]",
    "issuers": "[https://idp]",
    "groups": "[ops]",
    "scopes": "[read]",
    "claims": "{tenant: acme}",
    "params_match_claims": "{id: sub}",
    "expression": "'claims.tenant == \"acme\"'",
}


@pytest.mark.parametrize("part", sorted(PRINCIPAL_PARTS))
def test_a_condition_that_reads_the_token_is_refused_on_a_public_route(tmp_path: Path, part: str) -> None:
    """Each principal condition on a public route is a load error at its own line, saying why."""
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + f"""\
routes:
  - name: r
    match: {{path: {{template: "/x/{{id}}"}}}}
    public: true
    rules:
      - name: ok
        when: {{source_cidrs: [10.0.0.0/8]}}
      - name: bad
        when:
          {part}: {PRINCIPAL_PARTS[part]}
""")
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    [issue] = raised.value.issues
    assert (issue.line, issue.field) == (14, f"routes[0].rules[1].when.{part}")
    assert issue.message.startswith(f"{part} reads the caller's token; a public route's rules also decide for "
                                    "anonymous callers")


def test_an_expression_over_the_request_only_is_allowed_on_a_public_route(make_engine: MakeEngine) -> None:
    """CEL that names only `request` and `params` is principal-free."""
    engine = make_engine("""\
routes:
  - name: r
    public: true
    rules:
      - {name: json, when: {expression: 'request.method == "GET"'}}
""")
    assert decide(engine, None, "/x").allowed and not decide(engine, None, "/x", "POST").allowed


def test_claim_headers_and_deny_only_rules_are_refused_on_a_public_route(tmp_path: Path) -> None:
    """A `{claims.X}` header and a public route whose rules are all deny are both reported, each at its field."""
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + """\
routes:
  - name: r
    public: true
    rules:
      - name: who
        effect: deny
        when: {source_cidrs: [10.0.0.0/8]}
  - name: s
    public: true
    rules:
      - name: tag
        headers: {x-user: "{claims.sub}"}
""")
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    assert [(issue.line, issue.field) for issue in raised.value.issues] == [
        (7, "routes[0].public"), (16, "routes[1].rules[0].headers.x-user")]
    assert "needs an allow rule" in raised.value.issues[0].message


def _engine(directory: Path, routes: str) -> PolicyEngine:
    from extauth.clock import ManualClock

    path = directory / "p.yaml"
    path.write_text(HEAD + routes)
    return PolicyEngine(load_policies(path), ManualClock())
