"""Screening's part of the canonical request: path parameters, undecodable paths, hosts, method overrides, and the
total header size enforced on its own (docs/security.md, docs/screening.md)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.screening_inline import HEAD, screen, screener_for
from test_checks import blocked
from test_screening_config import errors

from extauth.request import Request
from extauth.screening.screener import METHOD_OVERRIDE_HEADERS, Screener
from extauth.tools.synthetic import check_request


@given(prefix=st.sampled_from(["/api", "/api/tenants", "/a/b/c"]), parameter=st.from_regex(r";[a-z=0-9;]{0,12}",
                                                                                           fullmatch=True),
       suffix=st.sampled_from(["", "/1", "/orders/1"]))
def test_a_path_parameter_in_any_segment_is_400(defaults: Screener, prefix: str, parameter: str, suffix: str) -> None:
    """`;` anywhere in the path (an upstream may drop what follows) is refused by default."""
    assert blocked(screen(defaults, prefix + parameter + suffix), "path_parameters", 400, "screening/path_parameters")


def test_path_parameters_allowed_are_dropped_before_matching() -> None:
    """With `path_parameters: false` the request passes and every phase sees the path without them."""
    screener = screener_for(HEAD + "metadata: {name: s}\nblocks: {path_parameters: false}\n")
    request = Request(check_request("/api;x=1/tenants;/acme/orders;jsessionid=9/1"))
    assert screener.screen(request) is None
    assert request.path == "/api/tenants/acme/orders/1"


@pytest.mark.parametrize("path", ["/caf%E9", "/%FF", "/a/%C3", "/%ED%A0%80"])
def test_a_path_that_is_not_utf8_once_decoded_is_400(defaults: Screener, path: str) -> None:
    """An undecodable path has no canonical form to decide on."""
    assert blocked(screen(defaults, path), "malformed_path", 400, "screening/malformed_path")


@pytest.mark.parametrize("host", ["bad host", "[::1", "example.com:x", "a/b", "exa%6dple.com"])
def test_an_unparsable_host_is_400(defaults: Screener, host: str) -> None:
    """A host that is no name or literal with an optional port cannot be matched reliably: refused."""
    decision = defaults.screen(Request(check_request("/", host=host)))
    assert blocked(decision, "invalid_host", 400, "screening/host")


@pytest.mark.parametrize("header", METHOD_OVERRIDE_HEADERS)
def test_method_override_headers_are_400(defaults: Screener, header: str) -> None:
    """A POST that the upstream would serve as DELETE is refused instead of authorised as a POST."""
    assert blocked(screen(defaults, "/api/orders", "POST", headers={header: "DELETE"}), "method_override", 400,
                   "screening/method_override")


@pytest.mark.parametrize("query", ["_method=DELETE", "a=1&_method=PUT", "%5Fmethod=DELETE", "_METHOD=delete",
                                   "x=1;_method=patch", "_method"])
def test_a_method_override_parameter_is_400(defaults: Screener, query: str) -> None:
    """Symfony, Laravel and Spring read `_method`; every spelling of its name is refused."""
    assert blocked(screen(defaults, f"/api/orders?{query}", "POST"), "method_override", 400,
                   "screening/method_override")


@pytest.mark.parametrize("query", ["method=x", "payment_method=card", "a_method=1", "q=_method"])
def test_other_parameters_named_like_method_pass(defaults: Screener, query: str) -> None:
    """Only the parameter named exactly `_method` is an override."""
    assert screen(defaults, f"/api/orders?{query}") is None


def test_method_override_may_be_switched_off() -> None:
    """`blocks.method_override: false` for upstreams that do not honour overrides."""
    screener = screener_for(HEAD + "metadata: {name: s}\nblocks: {method_override: false}\n")
    assert screen(screener, "/x?_method=PUT", "POST", headers={"x-http-method-override": "PUT"}) is None


def test_total_header_size_is_enforced_even_when_no_single_header_is_large() -> None:
    """max_headers_bytes below the per-header limit still applies: many small headers add up to 431."""
    screener = screener_for(HEAD + "metadata: {name: s}\nlimits: {max_headers_bytes: 400}\n")
    assert screen(screener, "/", headers={f"x-{n}": "v" * 20 for n in range(5)}) is None
    assert blocked(screen(screener, "/", headers={f"x-{n}": "v" * 20 for n in range(15)}), "headers_too_large", 431,
                   "screening/max_headers_bytes")


def test_a_total_limit_that_can_never_be_reached_is_a_load_error() -> None:
    """max_headers_bytes above max_headers × max_header_bytes would read as a protection that never applies."""
    assert errors(HEAD + "metadata: {name: s}\nlimits:\n  max_headers: 2\n  max_header_bytes: 100\n"
                         "  max_headers_bytes: 1000\n") == [
        "a.yaml:5: limits: max_headers_bytes 1000 can never be reached: max_headers 2 × max_header_bytes 100 "
        "is smaller"]


def test_a_per_header_limit_above_the_total_is_a_load_error() -> None:
    """max_header_bytes above max_headers_bytes can never fire: one header over it is over the total first."""
    assert errors(HEAD + "metadata: {name: s}\nlimits: {max_header_bytes: 9000, max_headers_bytes: 4000}\n") == [
        "a.yaml:4: limits: max_header_bytes 9000 can never be reached: max_headers_bytes 4000 (all headers "
        "together) is smaller"]


def test_signatures_see_the_canonical_path_too() -> None:
    """A signature on `/admin` also catches `/%61dmin` and `/admin;x`, spellings the upstream reads as `/admin`."""
    screener = screener_for(HEAD + "metadata: {name: s}\nblocks: {path_parameters: false}\nsignatures:\n"
                                   "  - {name: no-admin, targets: [path], pattern: '^/admin/'}\n")
    for path in ("/admin/x", "/%61dmin/x", "/admin;x=1/x"):
        assert blocked(screen(screener, path), "signature_match", 403, "s/no-admin")
