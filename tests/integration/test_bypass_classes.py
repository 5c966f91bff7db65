"""Issue 8's bypass table and its classes, through a real Envoy, the shipped demo policy and the demo upstream.

Each class (path parameters, case, trailing slash, extensions, percent-encoding, method variants, host variants,
spoofed rule headers) is tested with generated variants: a variant is decided exactly as its canonical spelling,
or refused with the documented 400, and never more permissively (docs/security.md).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateways import gateway_with_policies

from extauth.devstack.gateway import (
    EnvoyProcess,
    Response,
    forward_every_path,
)
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

#: Extra routes beside the demo's: a host-pinned route (host variants) and a CORS-enabled one.
HARDENING_POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: hardening}
routes:
  - name: partner-host
    match: {hosts: [partner.example.com], path: {prefix: /partner/}}
    rules:
      - {name: admins, when: {roles: [admin]}}
  - name: partner-any-host
    match: {path: {prefix: /partner/}}
    public: true
  - name: widgets
    match: {path: {prefix: /widgets/}, methods: [GET, POST]}
    cors_preflight: true
    rules:
      - {name: readers, when: {roles: [reader]}, headers: {x-widget-reader: "{claims.sub}"}}
"""

#: Requests bob (reader of tenant acme) must not get through, with the status the canonical spelling gets.
DENIED = [
    ("GET", "/api/tenants/umbrella/orders/1", 403),
    ("GET", "/api/tenants/umbrella/orders", 403),
    ("DELETE", "/api/tenants/acme/orders/1", 403),
    ("GET", "/admin/users", 403),
    ("POST", "/api/orders", 403),
]
#: Requests bob may make.
ALLOWED = [
    ("GET", "/api/tenants/acme/orders/1"),
    ("GET", "/api/orders/7"),
    ("GET", "/public/hello"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
         envoy_binary: Path) -> Iterator[EnvoyProcess]:
    with gateway_with_policies(tmp_path_factory.mktemp("bypass"), certs, upstream.port,
                               {"hardening.yaml": HARDENING_POLICY}, edit=forward_every_path) as (envoy, _):
        yield envoy


@pytest.fixture(scope="module")
def bob(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="bob", claims={"roles": ["reader"], "tenant": "acme"})


def send(gateway: EnvoyProcess, method: str, path: str, token: str | None = None,
         headers: dict[str, str] | None = None) -> Response:
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return gateway.request(method, path, sent)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/tenants/umbrella/orders/1", 403),
    ("GET", "/api/tenants/umbrella/orders;x=1/1", 400),
    ("GET", "/api/tenants;/umbrella/orders/1", 400),
    ("GET", "/api/Tenants/umbrella/orders/1", 403),
    ("GET", "/api/tenants/umbrella/orders.json", 403),
    ("OPTIONS", "/api/tenants/umbrella/orders/1", 405),
])
def test_the_bypass_table_gets_the_intended_status(demo: EnvoyProcess, bob: str, method: str, path: str,
                                                   status: int) -> None:
    """Every spelling of umbrella's orders from the issue's table is refused (403, 405, or 400 for `;`)."""
    assert send(demo, method, path, bob).status == status


def test_head_counts_against_the_get_limit(demo: EnvoyProcess, certs: DevCerts) -> None:
    """HEAD /api/limited is GET for the limit: 5 pass, the next two are 429."""
    token = mint_token(certs.jwt_signing_key, subject="head-counter", claims={"roles": ["reader"]})
    statuses = [send(demo, "HEAD", "/api/limited", token).status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2


def test_spoofed_rule_headers_never_reach_the_upstream(demo: EnvoyProcess, bob: str) -> None:
    """Headers a rule of the live policy can set, and the identity headers, are removed from every allowed request,
    anonymous or not, whether or not a rule set them this time."""
    spoofed = {"x-tenant": "umbrella", "x-support-agent": "helpdesk-1", "x-widget-reader": "root",
               "x-extauth-subject": "root", "x-extauth-roles": "admin"}
    anonymous = send(demo, "GET", "/public/x", headers=spoofed)
    assert anonymous.status == 200
    assert spoofed.keys().isdisjoint(anonymous.json()["headers"])
    own = send(demo, "GET", "/api/tenants/acme/orders/1", bob, headers=spoofed)
    seen = own.json()["headers"]
    assert own.status == 200 and seen["x-tenant"] == "acme" and seen["x-extauth-subject"] == "bob"
    assert "x-support-agent" not in seen and "x-widget-reader" not in seen


def test_cors_preflight_is_answered_only_where_a_route_allows_it(demo: EnvoyProcess) -> None:
    """A preflight for a method the resource admits passes without credentials on a `cors_preflight` route; a
    preflight elsewhere, or for a method the route does not admit, is refused."""
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    assert send(demo, "OPTIONS", "/widgets/1", headers=preflight).status == 200
    assert send(demo, "OPTIONS", "/widgets/1", headers={**preflight, "access-control-request-method": "DELETE"}
                ).status == 405
    assert send(demo, "OPTIONS", "/widgets/1").status == 405
    assert send(demo, "OPTIONS", "/api/tenants/acme/orders/1", headers=preflight).status == 405


# --- generated variants of each class --------------------------------------------------------------------------

def _flip_case(text: str, flips: list[bool]) -> str:
    padded = flips + [False] * len(text)
    return "".join(char.upper() if flip else char for char, flip in zip(text, padded, strict=False))


def _case_variant(path: str, flips: list[bool]) -> str:
    """Upper-cases letters of the literal segments only (parameter values are data the upstream may compare
    case-sensitively, so `ACME` is another tenant)."""
    parameters = {"umbrella", "acme", "1", "7", "users", "hello"}
    return "/".join(segment if segment in parameters else _flip_case(segment, flips) for segment in path.split("/"))


def _percent_variant(path: str, positions: list[int]) -> str:
    """Percent-encodes some unreserved letters, which decode to the same path."""
    chars = list(path)
    for position in positions:
        index = position % len(chars)
        if chars[index].isalnum():
            chars[index] = f"%{ord(chars[index]):02X}"
    return "".join(chars)


path_variant = st.one_of(
    st.tuples(st.just("case"), st.lists(st.booleans(), min_size=1, max_size=40)),
    st.tuples(st.just("slash"), st.just(None)),
    st.tuples(st.just("extension"), st.sampled_from([".json", ".xml", ".JSON", ".html", ".", ".tar.gz"])),
    st.tuples(st.just("percent"), st.lists(st.integers(0, 60), min_size=1, max_size=4)),
    st.tuples(st.just("parameter"), st.tuples(st.integers(1, 6), st.sampled_from([";", ";x=1", ";jsessionid=a"]))),
)


def spell(path: str, variant: tuple[str, object]) -> tuple[str, bool]:
    """The variant of `path`, and whether it is refused with 400 path_parameters by design."""
    kind, detail = variant
    if kind == "case":
        return _case_variant(path, detail), False  # type: ignore[arg-type]
    if kind == "slash":
        return path + "/", False
    if kind == "extension":
        return path + detail, False  # type: ignore[operator]
    if kind == "percent":
        return _percent_variant(path, detail), False  # type: ignore[arg-type]
    segment, parameter = detail  # type: ignore[misc]
    segments = path.split("/")
    index = 1 + segment % (len(segments) - 1)
    segments[index] += parameter
    return "/".join(segments), True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.sampled_from(DENIED), variant=path_variant)
def test_no_spelling_of_a_denied_request_is_allowed(demo: EnvoyProcess, bob: str, request: tuple[str, str, int],
                                                    variant: tuple[str, object]) -> None:
    """Case, trailing slash, extension, percent-encoding and `;parameters` variants of a denied request are
    denied with the same status (or 400 for path parameters)."""
    method, path, status = request
    spelt, refused = spell(path, variant)
    got = send(demo, method, spelt, bob)
    assert (got.status, spelt) == (400 if refused else status, spelt)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.sampled_from(ALLOWED), variant=path_variant.filter(lambda v: v[0] != "extension"))
def test_spellings_of_an_allowed_request_are_decided_alike(demo: EnvoyProcess, bob: str, request: tuple[str, str],
                                                           variant: tuple[str, object]) -> None:
    """The same variants of an allowed request stay allowed (path parameters aside, refused by default)."""
    method, path = request
    spelt, refused = spell(path, variant)
    assert (send(demo, method, spelt, bob).status, spelt) == (400 if refused else 200, spelt)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([path for _, path, _ in DENIED] + [path for _, path in ALLOWED]),
       method=st.sampled_from(["HEAD", "OPTIONS", "get", "Get", "PROPFIND", "TRACE"]))
def test_method_variants_are_never_more_permissive(demo: EnvoyProcess, bob: str, path: str, method: str) -> None:
    """HEAD is decided exactly as GET; OPTIONS passes only where GET does (a public route admitting every method),
    and lower-case or unknown methods are always refused: none is a free pass."""
    got = send(demo, method, path, bob).status
    get = send(demo, "GET", path, bob).status
    if method == "HEAD":
        assert got == get
    elif method == "OPTIONS":
        assert got >= 400 or get < 400
    else:
        assert got in (400, 405)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.sampled_from(["partner.example.com", "PARTNER.example.com", "partner.example.com.",
                             "Partner.Example.Com.:443", "partner.example.com:443"]),
       path=st.sampled_from(["/partner/x", "/Partner/x", "/partner/x/", "/partner/x.json"]))
def test_host_variants_reach_the_host_pinned_route(demo: EnvoyProcess, bob: str, host: str, path: str) -> None:
    """Case, a trailing dot and a port do not move a request off the route pinned to its host: bob (no admin)
    is refused there although the same path on any other host is public."""
    assert send(demo, "GET", path, bob, headers={"host": host}).status == 403
    assert send(demo, "GET", path, bob, headers={"host": "other.example.com"}).status == 200


@pytest.mark.parametrize("host", ["bad host", "a@b", "[::1", "[::1]x", "example.com:port", "exa%6dple.com"])
def test_an_unparsable_host_is_400(demo: EnvoyProcess, host: str) -> None:
    """A host that is not a name, an IPv4 or a bracketed IPv6 literal (with an optional port) is refused before
    any route is chosen (or by Envoy itself); never routed to a policy."""
    assert send(demo, "GET", "/public/hello", headers={"host": host}).status == 400


def test_method_override_is_refused_and_proxy_headers_never_reach_the_upstream(demo: EnvoyProcess, bob: str) -> None:
    """A POST carrying X-HTTP-Method-Override or `_method` is 400 (the upstream would serve another method), and
    headers only a proxy may set (X-Original-URL, X-Forwarded-Host, ...) are removed from allowed requests."""
    assert send(demo, "POST", "/api/orders", bob, headers={"x-http-method-override": "GET"}).status == 400
    assert send(demo, "POST", "/api/orders?_method=GET", bob).status == 400
    proxy_only = {"x-original-url": "/admin/users", "x-rewrite-url": "/admin/users",
                  "x-forwarded-host": "partner.example.com", "forwarded": "host=partner.example.com"}
    seen = send(demo, "GET", "/public/x", headers=proxy_only).json()["headers"]
    assert proxy_only.keys().isdisjoint(seen)
