"""Each built-in check: a clean request passes, its target is blocked with the right reason, status and rule."""

import pytest
from support.screening_inline import BROWSER, HEAD, screen, screener_for

from extauth.decision import Decision
from extauth.documents.screening import DEFAULT_METHODS
from extauth.screening.screener import Screener


def blocked(decision: Decision | None, reason: str, status: int, rule: str) -> bool:
    assert decision is not None, "expected a block"
    assert (decision.allowed, decision.reason, decision.status, decision.rule) == (False, reason, status, rule)
    return True


def test_browser_request_with_a_jwt_passes_the_defaults(defaults: Screener) -> None:
    """A realistic browser request (many headers, a JWT, a percent-encoded query) is not blocked."""
    assert screen(defaults, "/api/orders?page=2&sort=created%20desc&q=caf%C3%A9&from=2026-01-01..2026-02-01",
                  headers=BROWSER) is None


# methods ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", DEFAULT_METHODS)
def test_default_methods_pass(defaults: Screener, method: str) -> None:
    """GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are allowed by default."""
    assert screen(defaults, "/", method) is None


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "get", ""])
def test_other_methods_are_refused_with_405(defaults: Screener, method: str) -> None:
    """TRACE, CONNECT, WebDAV and non-canonical spellings get 405 method_not_allowed."""
    assert blocked(screen(defaults, "/", method), "method_not_allowed", 405, "screening/methods")


def test_a_document_narrows_the_methods() -> None:
    """`methods` replaces the default list."""
    screener = screener_for(HEAD + "metadata: {name: s}\nmethods: [GET, HEAD]\n")
    assert screen(screener, "/", "HEAD") is None
    assert blocked(screen(screener, "/", "POST"), "method_not_allowed", 405, "screening/methods")


# URI and query sizes ------------------------------------------------------------------------------------------

LIMITS = HEAD + "metadata: {name: s}\nlimits: {max_uri_bytes: 100, max_query_bytes: 40, max_header_bytes: 200,\n" \
                "  max_headers_bytes: 600, max_headers: 8}\n"


def test_uri_at_the_limit_passes_and_one_byte_more_is_414() -> None:
    """max_uri_bytes counts path + '?' + query in bytes."""
    screener = screener_for(LIMITS)
    assert screen(screener, "/" + "a" * 58 + "?" + "q" * 40) is None  # 59 + 1 + 40 = 100
    assert blocked(screen(screener, "/" + "a" * 59 + "?" + "q" * 40), "uri_too_long", 414, "screening/max_uri_bytes")
    assert screen(screener, "/" + "a" * 99) is None  # no query, no '?'
    assert blocked(screen(screener, "/" + "a" * 100), "uri_too_long", 414, "screening/max_uri_bytes")


def test_uri_length_counts_utf8_bytes_not_characters() -> None:
    """A path of 50 two-byte characters is 101 bytes, over a 100-byte limit."""
    assert blocked(screen(screener_for(LIMITS), "/" + "é" * 50), "uri_too_long", 414, "screening/max_uri_bytes")


def test_query_over_its_limit_is_414() -> None:
    """max_query_bytes applies to the query alone."""
    screener = screener_for(LIMITS)
    assert screen(screener, "/?" + "q" * 40) is None
    assert blocked(screen(screener, "/?" + "q" * 41), "uri_too_long", 414, "screening/max_query_bytes")


def test_default_limits_let_an_8k_uri_through_and_refuse_more(defaults: Screener) -> None:
    """The defaults: an 8 KiB URI passes (query up to 4 KiB), one byte more is 414."""
    query = "q=" + "x" * 4094
    path = "/" + "p" * (8192 - 1 - len(query) - 1)
    assert screen(defaults, f"{path}?{query}") is None
    assert blocked(screen(defaults, f"{path}p?{query}"), "uri_too_long", 414, "screening/max_uri_bytes")
    assert blocked(screen(defaults, f"/?{query}x"), "uri_too_long", 414, "screening/max_query_bytes")


# headers ------------------------------------------------------------------------------------------------------

def test_header_count_includes_pseudo_headers() -> None:
    """Envoy's map has :authority, :method, :path and x-request-id; 4 more make 8 (the limit), 5 more 9."""
    screener = screener_for(LIMITS)
    four = {f"x-{n}": "v" for n in range(4)}
    assert screen(screener, "/", headers=four) is None
    assert blocked(screen(screener, "/", headers={**four, "x-9": "v"}), "headers_too_large", 431,
                   "screening/max_headers")


def test_one_header_over_its_limit_is_431() -> None:
    """max_header_bytes counts name + value of one header."""
    screener = screener_for(LIMITS)
    assert screen(screener, "/", headers={"x-big": "v" * 195}) is None  # 5 + 195 = 200
    assert blocked(screen(screener, "/", headers={"x-big": "v" * 196}), "headers_too_large", 431,
                   "screening/max_header_bytes")


def test_header_size_counts_utf8_bytes() -> None:
    """A value of 98 two-byte characters is 196 bytes: with a 5-byte name, over 200."""
    assert blocked(screen(screener_for(LIMITS), "/", headers={"x-big": "é" * 98}), "headers_too_large", 431,
                   "screening/max_header_bytes")


def test_path_pseudo_header_is_governed_by_the_uri_limit_only() -> None:
    """A URI under max_uri_bytes is not refused because `:path` is over max_header_bytes."""
    screener = screener_for(HEAD + "metadata: {name: s}\nlimits: {max_uri_bytes: 300, max_header_bytes: 64}\n")
    assert screen(screener, "/" + "a" * 250) is None


def test_all_headers_together_over_their_limit_is_431() -> None:
    """max_headers_bytes counts every name and value, pseudo-headers included."""
    screener = screener_for(LIMITS)
    # :authority 25 + :method 10 + :path 6 + x-request-id 17 = 58, plus three headers of 3 + value bytes
    assert screen(screener, "/", headers={f"x-{n}": "v" * 177 for n in range(3)}) is None  # 58 + 540 = 598
    assert blocked(screen(screener, "/", headers={f"x-{n}": "v" * 178 for n in range(3)}), "headers_too_large",
                   431, "screening/max_headers_bytes")  # 58 + 543 = 601


# path traversal -----------------------------------------------------------------------------------------------

TRAVERSAL_PATHS = [
    "/a/../b", "/..", "/a/..", "/../etc/passwd",
    "/a/%2e%2e/b", "/a/%2E%2E/b", "/a/.%2e/b", "/a/%2e./b", "/a/.%2E/b", "/a/%2E./b",  # encoded, any case
    "/a/%252e%252e/b", "/a/%25252e%25252e/b", "/a/%252E./b",  # double and triple encoded
    "/a/..\\b", "\\..\\b",  # backslash separators
    "/a/..;/b", "/a/%2e%2e;/b",  # Tomcat-style path parameter after `..`
    "/a/%c0%ae%c0%ae/b", "/a/%C0%AE./b", "/a/%e0%80%ae%e0%80%ae/b", "/a/%u002e%u002e/b",  # overlong and %u dots
]
TRAVERSAL_QUERIES = [
    "file=../../etc/passwd", "file=..", "a=1&file=..&b=2", "file=..%2f..%2fetc%2fpasswd",
    "file=%2e%2e%2f%2e%2e%2fetc", "file=%252e%252e%252fetc", "file=..\\..\\windows\\win.ini",
    "file=..%5c..%5cwindows", "file=uploads/../../secret", "files=a.txt,../b.txt", "next=/x/../admin",
    "file=%C0%AE%C0%AE/etc",
]


@pytest.mark.parametrize("path", TRAVERSAL_PATHS)
def test_traversal_in_the_path_is_400(path: str) -> None:
    """`..` segments, raw, percent-encoded in any case, double-encoded, with backslashes or overlong, are blocked."""
    screener = screener_for(HEAD + "metadata: {name: s}\nblocks: {encoded_slashes: false}\n")
    assert blocked(screen(screener, path), "path_traversal", 400, "screening/path_traversal")


@pytest.mark.parametrize("query", TRAVERSAL_QUERIES)
def test_traversal_in_a_query_value_is_400(defaults: Screener, query: str) -> None:
    """A query value that walks up the tree is blocked, however it is encoded."""
    assert blocked(screen(defaults, f"/download?{query}"), "path_traversal", 400, "screening/path_traversal")


@pytest.mark.parametrize("url", [
    "/a/b..c", "/a/..b", "/a/b../c", "/a/.../b", "/v1.2/x", "/files/archive.tar.gz", "/a/./b", "/a/%2e/b",
    "/?q=wait...", "/?range=1..5", "/?q=hello..", "/?q=...&x=1", "/?version=2.0..3.0", "/?q=%2e%2e%2e",
])
def test_dots_that_are_not_a_parent_segment_pass(defaults: Screener, url: str) -> None:
    """Names with dots, version ranges and ellipses are not traversal."""
    assert screen(defaults, url) is None


# control characters -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "/a\x00b", "/a\x01", "/a\tb", "/a\x7f", "/a\x1b[31m",
    "/a%00b", "/a%0d%0aSet-Cookie:x", "/a%0D%0A", "/a%7f", "/a%2500", "/a%1B",
    "/?q=a\x00", "/?q=a%00", "/?q=a%0d%0aX-Injected:1", "/?q=%09", "/?q=%25%30%30", "/?q=%252500",
])
def test_control_characters_in_path_or_query_are_400(defaults: Screener, url: str) -> None:
    """NUL, other C0 controls and DEL, raw or percent-decoded (once, twice, thrice), are blocked."""
    assert blocked(screen(defaults, url), "control_characters", 400, "screening/control_characters")


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "\x1b]0;pwned\x07", "a\x7f", "\x01"])
def test_control_characters_in_a_header_value_are_400(defaults: Screener, value: str) -> None:
    """A header value with NUL, CR, LF, ESC, BEL, DEL or another C0 control is blocked."""
    assert blocked(screen(defaults, "/", headers={"x-note": value}), "control_characters", 400,
                   "screening/control_characters")


def test_tab_and_non_ascii_in_a_header_value_pass(defaults: Screener) -> None:
    """RFC 9110 allows HTAB inside a field value; UTF-8 text is not a control character."""
    assert screen(defaults, "/", headers={"x-note": "a\tb", "x-name": "Zoë – 東京"}) is None


def test_percent_encoded_control_in_a_header_value_passes(defaults: Screener) -> None:
    """Header values are checked raw only: `%00` in a header is text, as the upstream sees it."""
    assert screen(defaults, "/", headers={"referer": "https://x.example/?q=%00"}) is None


# encoded slashes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", "/a%252fb", "/a%255Cb", "/%2F"])
def test_encoded_slash_in_the_path_is_400(defaults: Screener, path: str) -> None:
    """`%2F` and `%5C` in any case, also double-encoded, are blocked in the path."""
    assert blocked(screen(defaults, path), "encoded_slash", 400, "screening/encoded_slashes")


def test_encoded_slash_in_the_query_passes(defaults: Screener) -> None:
    """A URL in a query value is normally percent-encoded: `?next=%2Fhome%2Fx` is fine."""
    assert screen(defaults, "/login?next=%2Fhome%2Fx&dir=a%5Cb") is None


# switching blocks off -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("block", "url"), [
    ("path_traversal", "/a/../b"), ("control_characters", "/a%00b"), ("encoded_slashes", "/a%2fb"),
])
def test_a_block_switched_off_lets_its_target_through(block: str, url: str) -> None:
    """`blocks: {<check>: false}` disables exactly that check."""
    screener = screener_for(HEAD + f"metadata: {{name: s}}\nblocks: {{{block}: false}}\n")
    assert screen(screener, url) is None


def test_control_characters_off_also_skips_header_values() -> None:
    """With control_characters off, a header value with ESC passes."""
    screener = screener_for(HEAD + "metadata: {name: s}\nblocks: {control_characters: false}\n")
    assert screen(screener, "/", headers={"x-note": "\x1b"}) is None


# what the client learns ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/a/../secret-token", "/a%00secret-token", "/a%2fsecret-token",
                                 "/?x=" + "secret-token" * 400])
def test_the_description_never_echoes_the_request(defaults: Screener, url: str) -> None:
    """The client-facing description is generic: it contains none of the offending input."""
    decision = screen(defaults, url)
    assert decision is not None
    assert "secret" not in decision.description and "%" not in decision.description
