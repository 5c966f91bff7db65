"""Repeated and comma-joined header values and repeated query parameters: deny rules match any value, allow rules
need every value, and values that disagree on an allow rule are a 400 (docs/policy.md, "Repeated values")."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.inline_policy import TUESDAY_MORNING, decide, engine_for
from support.spellings import combined, header_spellings, query_spellings

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

ROUTES = """\
routes:
  - name: header
    match: {path: {prefix: /header}}
    rules:
      - {name: no-legacy, effect: deny, when: {headers: {x-client: legacy}}}
      - {name: known-clients, when: {headers: {x-client: [web, ios]}}}
  - name: header-regex
    match: {path: {prefix: /versioned}}
    rules:
      - {name: no-bots, effect: deny, when: {headers: {x-client: {regex: 'bot.*'}}}}
      - {name: versioned-clients, when: {headers: {x-client: {regex: '(web|ios)/[0-9]+'}}}}
  - name: query
    match: {path: {prefix: /query}}
    rules:
      - {name: no-raw, effect: deny, when: {query: {view: raw}}}
      - {name: known-views, when: {query: {view: [summary, full]}}}
  - name: query-bracketed
    match: {path: {prefix: /filtered}}
    rules:
      - {name: open-only, when: {query: {"filter[status]": open}}}
  - name: query-present
    match: {path: {prefix: /quiet}}
    rules:
      - {name: no-debug, effect: deny, when: {query: {debug: {present: true}}}}
      - {name: anyone, when: {roles: [reader]}}
"""

HEADER_VALUES = {"/header": ["web", "ios", "legacy", "android", ""],
                 "/versioned": ["web/1", "ios/22", "bot", "botnet/2", "cli/1", "web"]}
QUERY_VALUES = {"/query": ["summary", "full", "raw", "other", "", "a b"], "/quiet": ["1", "", "yes"]}
QUERY_NAMES = {"/query": "view", "/quiet": "debug"}
READER = principal("u", ["reader"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    return engine_for(Path(tmp_path_factory.mktemp("repeated")), ManualClock(TUESDAY_MORNING), ROUTES)


def header_decision(engine: PolicyEngine, path: str, value: str | None) -> Reason:
    headers = {} if value is None else {"x-client": value}
    return decide(engine, READER, path, headers=headers).reason


def query_decision(engine: PolicyEngine, path: str, query: str | None) -> Reason:
    return decide(engine, READER, path if query is None else f"{path}?{query}").reason


@pytest.mark.parametrize("value, reason", [
    ("web", Reason.OK),
    (" web\t", Reason.OK),
    ("web,ios", Reason.OK),
    ("web, web", Reason.OK),
    ("web,legacy", Reason.DENIED_BY_RULE),
    ("legacy , web", Reason.DENIED_BY_RULE),
    ("web,android", Reason.AMBIGUOUS_REQUEST),
    ("web,", Reason.AMBIGUOUS_REQUEST),
    ("android", Reason.FORBIDDEN),
    ("android,cli", Reason.FORBIDDEN),
    (None, Reason.FORBIDDEN),
])
def test_header_values_are_the_trimmed_comma_separated_elements(engine: PolicyEngine, value, reason) -> None:
    """Deny matches any element, allow needs every element; elements that disagree on the allow rule are a 400."""
    assert header_decision(engine, "/header", value) is reason


@pytest.mark.parametrize("query, reason", [
    ("view=summary", Reason.OK),
    ("view=summary&view=full", Reason.OK),
    ("view=+summary%20", Reason.OK),
    ("vi%65w=summary", Reason.OK),
    ("view=summary&View=full", Reason.OK),
    ("view=summary&view=raw", Reason.DENIED_BY_RULE),
    ("VIEW=raw", Reason.DENIED_BY_RULE),
    ("view[]=raw&view=summary", Reason.DENIED_BY_RULE),
    ("view=r%61w", Reason.DENIED_BY_RULE),
    ("view=summary&view=other", Reason.AMBIGUOUS_REQUEST),
    ("view=summary&view", Reason.AMBIGUOUS_REQUEST),
    ("View=summary", Reason.AMBIGUOUS_REQUEST),
    ("view%5B%5D=summary", Reason.AMBIGUOUS_REQUEST),
    ("view=other", Reason.FORBIDDEN),
    ("views=summary", Reason.FORBIDDEN),
    ("VIEW=other", Reason.FORBIDDEN),
    ("view=summary;view=raw", Reason.DENIED_BY_RULE),
    ("page=1;view=raw", Reason.DENIED_BY_RULE),
    ("view=summary;page=2", Reason.AMBIGUOUS_REQUEST),
    ("view=summary&page=2;3", Reason.OK),
])
def test_query_values_are_every_occurrence_under_every_spelling(engine: PolicyEngine, query, reason) -> None:
    """Names and values are decoded; any letter case or an array suffix is the same parameter to some upstream,
    so it counts for a deny rule and, if the exact name is not also there, makes an allow rule ambiguous; a `;`
    separates parameters for some upstreams, so a query with one is read both ways."""
    assert query_decision(engine, "/query", query) is reason


@pytest.mark.parametrize("query, reason", [
    ("filter[status]=open&filter[type]=x", Reason.OK),
    ("filter%5Bstatus%5D=open", Reason.OK),
    ("filter[status]=open&FILTER[Status]=closed", Reason.AMBIGUOUS_REQUEST),
    ("filter[status]=closed", Reason.FORBIDDEN),
])
def test_a_bracketed_parameter_name_is_its_own_parameter(engine: PolicyEngine, query, reason) -> None:
    """A policy name such as `filter[status]` is not widened to other `filter[...]` parameters; case still counts."""
    assert query_decision(engine, "/filtered", query) is reason


@pytest.mark.parametrize("query, reason", [
    (None, Reason.OK), ("page=1", Reason.OK), ("debug", Reason.DENIED_BY_RULE), ("Debug=0", Reason.DENIED_BY_RULE),
    ("debug[]=1", Reason.DENIED_BY_RULE)])
def test_presence_counts_any_spelling_of_the_name_for_a_deny_rule(engine: PolicyEngine, query, reason) -> None:
    """`present: true` in a deny rule matches the parameter under any spelling an upstream reads as it."""
    assert query_decision(engine, "/quiet", query) is reason


@pytest.mark.parametrize("path", HEADER_VALUES)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_every_header_spelling_decides_as_its_values_do_canonically(engine: PolicyEngine, path: str, data) -> None:
    """Repeated lines (joined with `,` as Envoy does), comma lists and padding decide as the values spelt one by
    one: a deny for any value denies, agreeing values decide alike, disagreeing ones are a 400."""
    spelling = data.draw(header_spellings(HEADER_VALUES[path]))
    expected = combined(header_decision(engine, path, value) for value in spelling.values)
    assert header_decision(engine, path, spelling.joined) is expected, spelling


@pytest.mark.parametrize("path", QUERY_VALUES)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_every_query_spelling_decides_as_its_values_do_canonically(engine: PolicyEngine, path: str, data) -> None:
    """Repeated parameters, case, array suffixes, percent-encoded names and values, `+` and padding decide as the
    values spelt one by one (None: the parameter absent, as an upstream reading only the exact name sees it)."""
    name = QUERY_NAMES[path]
    spelling = data.draw(query_spellings(name, QUERY_VALUES[path]))
    expected = combined(query_decision(engine, path, None if value is None else f"{name}={value.replace(' ', '+')}")
                        for value in spelling.values)
    assert query_decision(engine, path, spelling.query) is expected, spelling


def test_explain_says_which_values_disagree(engine: PolicyEngine) -> None:
    """`extauth explain` names the values of an ambiguous request and the allow rule they disagree on."""
    explanation = engine.explain(Request(check_request("/header", headers={"x-client": "web,android"})), READER)
    assert explanation.decision.reason is Reason.AMBIGUOUS_REQUEST and explanation.decision.status == 400
    assert explanation.decision.rule == "p/header/known-clients"
    known = next(rule for rule in explanation.rules if rule.rule == "p/header/known-clients")
    assert "['web', 'android'] disagree" in known.why
