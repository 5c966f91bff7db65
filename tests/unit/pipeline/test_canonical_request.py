"""The canonical request (docs/security.md): one spelling of a request that every phase decides on.

The parsers are tested on examples and on generated input; the whole rule ("a spelling the upstream serves as the
same resource is decided as that resource") is tested on the demo policy with generated variants of each class.
"""

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.documents.loader import load_policies
from extauth.request import Request, canonical_host, canonical_segments, fold_case
from extauth.tools.synthetic import check_request, principal

DEMO = Path(__file__).parents[3] / "envoy" / "policies"
ENGINE = PolicyEngine(load_policies(DEMO), ManualClock(datetime.fromisoformat("2026-11-24T10:00:00+00:00").timestamp()))
BOB = principal("bob", ["reader"], {"tenant": "acme"})


@pytest.mark.parametrize("host, canonical", [
    ("api.example.com", "api.example.com"),
    ("API.Example.COM", "api.example.com"),
    ("api.example.com.", "api.example.com"),
    ("api.example.com:8443", "api.example.com"),
    ("API.example.com.:443", "api.example.com"),
    ("127.0.0.1:80", "127.0.0.1"),
    ("[::1]", "::1"),
    ("[::1]:8443", "::1"),
    ("[0:0:0:0:0:0:0:1]:80", "::1"),
    ("[2001:DB8::1]", "2001:db8::1"),
    ("", ""),
    ("::1", None),                  # an IPv6 literal needs brackets
    ("[::1", None),
    ("[::1]x", None),
    ("[::1]:", None),
    ("[not-an-ip]", None),
    ("example.com:", None),
    ("example.com:port", None),
    ("example.com:123456", None),
    ("exa mple.com", None),
    ("user@example.com", None),
    ("exa%6dple.com", None),
    ("example.com..", None),
    (":80", None),
    (".", None),
])
def test_hosts_are_canonical_or_refused(host: str, canonical: str | None) -> None:
    """Lower case, no trailing dot, no port (IPv6 literals included); anything else is not a host."""
    assert canonical_host(host) == canonical


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}",
                      fullmatch=True)


@given(name=names, upper=st.lists(st.booleans(), max_size=60), dot=st.booleans(),
       port=st.none() | st.integers(0, 65535))
def test_spellings_of_a_host_have_one_canonical_form(name: str, upper: list[bool], dot: bool, port: int | None) -> None:
    """Any mix of case, a trailing dot and a port gives the same host."""
    spelt = "".join(char.upper() if flip else char for char, flip in zip(name, upper + [False] * len(name),
                                                                         strict=False))
    spelt += "." if dot else ""
    spelt += f":{port}" if port is not None else ""
    assert canonical_host(spelt) == name


@given(st.text(max_size=40))
def test_any_host_text_is_canonical_or_refused_never_an_error(text: str) -> None:
    """Hostile `:authority` values never raise; what comes out is a plain lower-case name or literal."""
    result = canonical_host(text)
    assert result is None or result == result.lower()


@pytest.mark.parametrize("path, segments", [
    ("/", ("", "")),
    ("/a/b", ("", "a", "b")),
    ("/a/b/", ("", "a", "b")),
    ("/a;x=1/b;", ("", "a", "b")),
    ("/a;jsessionid=1", ("", "a")),
    ("/%61/%62c", ("", "a", "bc")),
    ("/%2561", ("", "%61")),                 # decoded once, as the upstream decodes it
    ("/a%3Bb", ("", "a;b")),                 # an encoded ';' is a literal character, not a parameter
    ("/caf%C3%A9", ("", "café")),
    ("/bad%FF", None),                       # not UTF-8: refused by screening
])
def test_paths_are_split_decoded_and_stripped_of_parameters(path: str, segments: tuple[str, ...] | None) -> None:
    """`;parameters` dropped, each segment decoded once, no trailing slash; undecodable paths are refused."""
    assert canonical_segments(path) == segments


@pytest.mark.parametrize("text, folded", [("Tenants", "tenants"), ("tenantſ", "tenants"), ("ınfo", "info"),
                                          ("\u212aey", "key")])
def test_case_folding_matches_what_case_insensitive_upstreams_compare(text: str, folded: str) -> None:
    """`ſ` (long s), `ı` (dotless i) and the Kelvin sign fold as Java's equalsIgnoreCase sees them."""
    assert fold_case(text) == folded


def test_head_is_get_and_the_wire_method_is_kept() -> None:
    """Every phase sees HEAD as GET; screening and the audit trail still see HEAD."""
    request = Request(check_request("/x", "HEAD"))
    assert (request.method, request.wire_method) == ("GET", "HEAD")


# --- the rule, on the demo policy ---------------------------------------------------------------------------

def decide(method: str, path: str, host: str = "gateway.example") -> tuple[int, str | None]:
    decision = ENGINE.authorize(Request(check_request(path, method, host=host)), BOB)
    return decision.status, decision.route


CANONICAL = [
    ("GET", "/api/tenants/umbrella/orders/1"),
    ("GET", "/api/tenants/umbrella/orders"),
    ("GET", "/api/tenants/acme/orders/1"),
    ("DELETE", "/api/tenants/acme/orders/1"),
    ("GET", "/admin/users"),
    ("GET", "/admin/maintenance"),
    ("GET", "/api/limited"),
    ("GET", "/healthz"),
]
LITERALS = {"api", "tenants", "orders", "admin", "users", "maintenance", "limited", "healthz"}


@st.composite
def spellings(draw: st.DrawFn, path: str) -> str:
    """The same resource as an upstream with case-insensitive, suffix-matching, IIS-like routing reads it."""
    out = []
    for segment in path.split("/"):
        if segment in LITERALS:
            segment = "".join(draw(st.sampled_from([char, char.upper()] + (["ſ"] if char == "s" else [])))
                              for char in segment)
            segment += draw(st.sampled_from(["", "", ".", " ", ".."]))
        if segment and draw(st.booleans()):
            segment = "".join(f"%{ord(char):02X}" if char.isascii() and draw(st.booleans()) else char
                              for char in segment)
        out.append(segment)
    spelt = "/".join(out)
    spelt += draw(st.sampled_from(["", "/", ".json", ".XML", "."]))
    return spelt


@settings(max_examples=400, deadline=None)
@given(data=st.data(), request=st.sampled_from(CANONICAL))
def test_every_spelling_is_decided_as_its_canonical_resource(data: st.DataObject, request: tuple[str, str]) -> None:
    """Case (Unicode folding included), trailing dots and spaces, percent-encoding, a trailing slash and an
    extension never move a request to another route or another answer."""
    method, path = request
    spelt = data.draw(spellings(path))
    assert decide(method, spelt) == decide(method, path), spelt


SPECIFICITY = {route.route_id: route.specificity for route in ENGINE.routes}


def most_specific_resource(path: str) -> tuple[int, ...]:
    request = Request(check_request(path))
    return max(route.specificity for route in ENGINE.routes if route.match(request) is not None)


@settings(max_examples=200, deadline=None)
@given(request=st.sampled_from(CANONICAL), method=st.sampled_from(["HEAD", "OPTIONS", "PUT", "PATCH", "POST"]))
def test_no_method_reaches_a_broader_route(request: tuple[str, str], method: str) -> None:
    """HEAD is decided as GET; any other method is decided by a route of the most specific matching resource
    (or refused with 405 there), never by a broader one."""
    _, path = request
    status, route = decide(method, path)
    if method == "HEAD":
        assert (status, route) == decide("GET", path)
    assert route is not None and SPECIFICITY[route] == most_specific_resource(path)
    assert status in (200, 403, 405)
