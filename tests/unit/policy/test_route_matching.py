"""Path templates and their parameters, regex paths, hosts, and the route index."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.inline_policy import MakeEngine, decide

from extauth.authorization.engine import PolicyEngine
from extauth.authorization.index import Resolution, RouteIndex
from extauth.authorization.matching import CompiledRoute, compile_route
from extauth.conditions.params import NO_PARAMS
from extauth.documents.policy import RouteMatch
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

ROUTES = """\
routes:
  - name: order
    match: {path: {template: "/tenants/{tenant}/orders/{id}"}}
    rules: [{name: any, headers: {x-route: "order {tenant} {id}"}}]
  - name: files
    match: {path: {template: "/files/{path...}"}}
    rules: [{name: any, headers: {x-route: "files {path}"}}]
  - name: report
    match: {path: {regex: "/reports/(?P<year>[0-9]{4})-(?P<month>[0-9]{2})\\\\.csv"}}
    rules: [{name: any, headers: {x-route: "report {year} {month}"}}]
  - name: internal-host
    match: {hosts: [internal.example.com, "*.corp.example"], path: {prefix: /}}
    rules: [{name: any, headers: {x-route: host}}]
"""


@pytest.fixture
def engine(make_engine: MakeEngine) -> PolicyEngine:
    return make_engine(ROUTES)


def route_header(engine: PolicyEngine, path: str, host: str = "gateway.example") -> str | None:
    decision = decide(engine, principal("u"), path, host=host)
    return dict(decision.upstream_headers).get("x-route") if decision.allowed else None


@pytest.mark.parametrize("path, expected", [
    ("/tenants/acme/orders/42", "order acme 42"),
    ("/tenants/acme/orders/", None),             # {id} needs a non-empty segment
    ("/tenants/acme/orders/42/items", None),     # one segment per parameter
    ("/tenants/acme/order/42", None),
    ("/files", "files "),                        # {path...} takes the rest, possibly empty
    ("/files/", "files "),
    ("/files/a/b.txt", "files a/b.txt"),
    ("/filesystem", None),
    ("/reports/2026-11.csv", "report 2026 11"),  # regex named groups are parameters
    ("/reports/2026-11.csv.bak", None),          # regex is a full match
])
def test_templates_and_regexes_bind_path_parameters(engine: PolicyEngine, path: str, expected: str | None) -> None:
    """Templates match segment by segment and regexes match the whole path; both bind parameters."""
    assert route_header(engine, path) == expected


@pytest.mark.parametrize("host, expected", [
    ("internal.example.com", "host"),
    ("INTERNAL.example.com:8443", "host"),   # case and port do not matter
    ("a.corp.example", "host"),
    ("a.b.corp.example", "host"),            # a wildcard covers any depth, as in Envoy
    ("corp.example", None),
    ("evilcorp.example", None),
    ("internal.example.com.evil", None),
])
def test_hosts_match_exactly_or_by_wildcard_suffix(engine: PolicyEngine, host: str, expected: str | None) -> None:
    """`hosts` compares the request's host without port, exactly or by `*.` suffix."""
    assert route_header(engine, "/anything", host) == expected


def test_unmatched_template_falls_through_to_default_deny(engine: PolicyEngine) -> None:
    """A path that fits no template, regex or host is still denied by default."""
    assert decide(engine, principal("u"), "/tenants/acme").reason is Reason.NO_MATCHING_ROUTE


def test_most_specific_route_decides_across_index_buckets(make_engine: MakeEngine) -> None:
    """A regex route listed first does not take /api/x from a later exact route: the most specific route decides."""
    engine = make_engine("""\
routes:
  - {name: any-api, match: {path: {regex: "/api/.*"}}, public: true}
  - {name: exact, match: {path: {exact: /api/x}}, rules: [{name: r}]}
""")
    assert decide(engine, None, "/api/x").route == "p/exact"
    assert decide(engine, None, "/api/y").rule == "p/any-api"


# --- The index resolves as a linear scan of the rule in docs/policy.md ------------------------------------

PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/c", "/ab", "/b", "/b/a", "/a/x/b", "*", "/a//b", "/x/y"]
PATH_MATCHES = [
    None,
    *({"exact": path} for path in PATHS[:9]),
    *({"prefix": prefix} for prefix in ["/", "/a", "/a/", "/a/b", "/b/", "/ab"]),
    *({"template": template} for template in
      ["/", "/a", "/a/{x}", "/{x}", "/{x}/b", "/a/{x}/b", "/a/{rest...}", "/{rest...}", "/b/{x}/"]),
    {"regex": "/a.*"}, {"regex": "/(a|b)/.+"},
]
routes = st.lists(st.tuples(st.sampled_from(PATH_MATCHES), st.sampled_from([None, ["GET"], ["POST"]]),
                            st.sampled_from([{}, {"service": "s"}])), max_size=12)


def most_specific_scan(compiled: list[CompiledRoute], request: Request) -> Resolution:
    """The rule, naively: of the routes whose resource matches, the most specific level decides; within it the first
    in policy order that admits the method, else a 405 naming that level's routes."""
    matching = [(route, params) for route in compiled if (params := route.match(request)) is not None]
    if not matching:
        return Resolution(None, NO_PARAMS)
    top = max(route.specificity for route, _ in matching)
    level = [(route, params) for route, params in matching if route.specificity == top]
    admitted = next(((route, params) for route, params in level if route.admits(request.method)), None)
    if admitted is not None:
        return Resolution(*admitted)
    return Resolution(None, NO_PARAMS, tuple(route for route, _ in level))


@settings(max_examples=300, deadline=None)
@given(routes=routes, path=st.sampled_from(PATHS) | st.from_regex(r"/[aAbB/.]{0,6}", fullmatch=True),
       method=st.sampled_from(["GET", "HEAD", "POST"]), service=st.sampled_from(["", "s"]))
def test_index_agrees_with_a_linear_scan(routes, path, method, service) -> None:
    """Whatever the routes and the path, the index resolves the route a naive scan of every route resolves."""
    compiled = [compile_route(f"r{index}", index, RouteMatch(path=path_match, methods=methods,
                                                               context_extensions=extensions))
                for index, (path_match, methods, extensions) in enumerate(routes)]
    request = Request(check_request(path, method, context_extensions={"service": service} if service else None))
    assert RouteIndex(compiled).resolve(request) == most_specific_scan(compiled, request)
