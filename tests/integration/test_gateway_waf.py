"""Through a real Envoy: the OWASP Core Rule Set (ModSecurity) of the shipped demo policies (envoy/policies/waf.yaml).

Attacks in the query, in headers and in JSON and form bodies (on /public/, the body-inspecting route) are 403
`waf_blocked` with the matched rule ids in the audit event and never the payload; a generated corpus of benign API
traffic passes; detect mode never blocks; a broken rule file is a rejected reload.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from support.gateways import demo_policies_with, gateway_with_policies
from support.waf_corpus import benign_requests
from test_policy_reload import wait_for

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

#: One request per attack class the issue names: (name, path, extra headers, body or None, a rule id CRS must name).
QUERY_ATTACKS = [
    ("sqli", "/public/get?id=" + quote("1' OR 1=1--"), 942100),
    ("sqli-union", "/public/items?q=" + quote("1 UNION SELECT username, password FROM users"), 942100),
    ("xss", "/public/search?q=" + quote("<script>alert(document.cookie)</script>"), 941100),
    ("traversal-os-file", "/public/download?file=" + quote("/etc/passwd"), 930120),
    ("rce", "/public/ping?host=" + quote("127.0.0.1; cat /etc/shadow"), 932100),
    ("protocol-smuggling", "/public/get?q=" + quote("GET /admin HTTP/1.1"), 921110),
]
HEADER_ATTACKS = [
    ("scanner-user-agent", {"user-agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}, 913100),
    ("sqli-in-cookie", {"cookie": "session=" + quote("1' OR '1'='1' --")}, 942100),
    ("xss-in-referer", {"referer": "https://example.org/<script>alert(1)</script>"}, 941110),
]
BODY_ATTACKS = [
    ("json-sqli", "application/json", json.dumps({"name": "x' OR 1=1--"}).encode(), 942100),
    ("json-xss", "application/json", json.dumps({"bio": "<img src=x onerror=alert(1)>"}).encode(), 941100),
    ("form-sqli", "application/x-www-form-urlencoded", b"user=admin%27%20OR%20%271%27%3D%271%27--", 942100),
    ("form-rce", "application/x-www-form-urlencoded", b"cmd=%3Bcat%20%2Fetc%2Fpasswd", 932100),
]
DETECT = """\
apiVersion: extauth/v1
kind: Screening
metadata: {name: waf}
waf: {mode: detect, routes: [{name: public-bodies, path_prefix: /public/, inspect_body: {max_bytes: 8192}}]}
"""


@pytest.fixture(scope="module")
def detect_gateway(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts,
                   upstream: RunningUpstream, envoy_binary: Path) -> Iterator[tuple[EnvoyProcess, ExtauthProcess]]:
    with gateway_with_policies(tmp_path_factory.mktemp("waf-detect"), certs, upstream.port,
                               {"waf.yaml": DETECT}) as processes:
        yield processes


def _blocked_event(extauth: ExtauthProcess, response_status: int, reason: str) -> dict:
    assert (response_status, reason) == (403, "waf_blocked")
    return extauth.audit_events()[-1]


def _assert_blocked_by(event: dict, rule_id: int, payload: str) -> None:
    assert event["reason"] == "waf_blocked" and event["waf"]["blocked"] is True
    assert rule_id in event["waf"]["rule_ids"] and event["waf"]["anomaly_score"] >= 5
    assert payload not in json.dumps(event["waf"])  # the matched data (the attack) is never audited


@pytest.mark.parametrize(("name", "path", "rule_id"), QUERY_ATTACKS, ids=[a[0] for a in QUERY_ATTACKS])
def test_attacks_in_the_query_are_blocked_with_their_rule_ids_audited(
        gateway: EnvoyProcess, extauth: ExtauthProcess, name: str, path: str, rule_id: int) -> None:
    """Each attack class in a query string is 403 `waf_blocked`, and the audit event names the CRS rule."""
    response = gateway.get(path)
    event = _blocked_event(extauth, response.status, response.json()["reason"])
    _assert_blocked_by(event, rule_id, path.partition("=")[2])


@pytest.mark.parametrize(("name", "headers", "rule_id"), HEADER_ATTACKS, ids=[a[0] for a in HEADER_ATTACKS])
def test_attacks_in_headers_are_blocked_with_their_rule_ids_audited(
        gateway: EnvoyProcess, extauth: ExtauthProcess, name: str, headers: dict[str, str], rule_id: int) -> None:
    """A scanner's User-Agent, SQL injection in a cookie and XSS in the Referer are blocked (rule ids audited)."""
    response = gateway.request("GET", "/public/get", headers)
    event = _blocked_event(extauth, response.status, response.json()["reason"])
    _assert_blocked_by(event, rule_id, next(iter(headers.values())))


@pytest.mark.parametrize(("name", "content_type", "body", "rule_id"), BODY_ATTACKS, ids=[a[0] for a in BODY_ATTACKS])
def test_attacks_in_json_and_form_bodies_are_blocked_on_the_body_inspecting_route(
        gateway: EnvoyProcess, extauth: ExtauthProcess, name: str, content_type: str, body: bytes,
        rule_id: int) -> None:
    """Envoy sends /public/ bodies with the Check (with_request_body): an attack in a JSON or form body is blocked."""
    response = gateway.request("POST", "/public/post", {"content-type": content_type}, body=body)
    event = _blocked_event(extauth, response.status, response.json()["reason"])
    _assert_blocked_by(event, rule_id, body.decode())


def test_the_generated_benign_corpus_passes_with_zero_false_positives(
        gateway: EnvoyProcess, extauth: ExtauthProcess, certs: DevCerts) -> None:
    """240 ordinary API requests (JSON and form bodies, JWTs, UUIDs, dates, quoted searches, file names) are all
    answered by the upstream: CRS at paranoia level 1 blocks none of them."""
    tokens = [mint_token(certs.jwt_signing_key, subject=f"user-{n}", claims={"roles": ["reader"]}) for n in range(3)]
    corpus = benign_requests(240, tokens)
    blocked = []
    for request in corpus:
        response = gateway.request(request.method, request.path, request.headers, body=request.body)
        if response.status != 200:
            blocked.append((request, response.status, response.body[:200]))
    assert blocked == []
    events = extauth.audit_events()[-len(corpus):]
    assert all(event["decision"] == "allow" for event in events)


def test_a_long_body_is_inspected_up_to_the_documented_limit(gateway: EnvoyProcess, extauth: ExtauthProcess) -> None:
    """A body over Envoy's 8 KiB buffer is still let through (allow_partial_message): only its first 8 KiB are
    inspected, so an attack inside them is blocked and one after them is the upstream's to handle."""
    padding = json.dumps({"pad": "a" * 9000})[:-1]
    early = json.dumps({"name": "x' OR 1=1--"})[:-1] + ", " + padding[1:] + "}"
    late = padding + ', "name": "x\' OR 1=1--"}'
    assert gateway.request("POST", "/public/post", {"content-type": "application/json"},
                           body=early.encode()).status == 403
    assert gateway.request("POST", "/public/post", {"content-type": "application/json"},
                           body=late.encode()).status == 200


def test_detect_mode_never_blocks_but_audits_what_it_would_have_blocked(
        detect_gateway: tuple[EnvoyProcess, ExtauthProcess]) -> None:
    """With `mode: detect`, every attack above reaches the upstream; each allow carries the rule ids that matched."""
    envoy, extauth = detect_gateway
    for _, path, rule_id in QUERY_ATTACKS:
        assert envoy.get(path).status == 200, path
        waf = extauth.audit_events()[-1]["waf"]
        assert (waf["mode"], waf["blocked"], waf["over_threshold"]) == ("detect", False, True)
        assert rule_id in waf["rule_ids"]
    for _, content_type, body, _ in BODY_ATTACKS:
        assert envoy.request("POST", "/public/post", {"content-type": content_type}, body=body).status == 200


def test_a_broken_rule_file_is_a_rejected_reload_with_modsecuritys_own_error(
        tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, envoy_binary: Path) -> None:
    """Editing only a project .conf is a reload (the watch covers rule files); one ModSecurity cannot parse keeps
    the last good policy (still blocking) and the rejection names the file and line ModSecurity reported."""
    policies = demo_policies_with(tmp_path)
    config = extauth_config(tmp_path, certs, policy={"path": str(policies), "watch_interval_seconds": 0.2})
    extauth = ExtauthProcess(tmp_path, config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    attack, local = QUERY_ATTACKS[0][1], policies / "local.conf"
    try:
        assert envoy.get(attack).status == 403
        local.write_text('SecRule ARGS:probe "@streq block-me" "id:1000001,phase:2,pass,log,severity:CRITICAL,'
                         'setvar:tx.anomaly_score_pl1=+5"\n')
        (policies / "waf.yaml").write_text((policies / "waf.yaml").read_text().replace(
            "rules: [crs]", "rules: [local.conf, crs]"))
        wait_for(lambda: envoy.get("/public/get?probe=block-me").status == 403)

        local.write_text('# project rules\nSecRule ARGS "@rx x" "id:1000001,phase:2,nosuchaction"\n')
        wait_for(lambda: any(e["event"] == "policy_reload_failed" for e in extauth.audit_events(kind=None)))
        failed = next(e for e in extauth.audit_events(kind=None) if e["event"] == "policy_reload_failed")
        assert failed["errors"][0].startswith(f"{policies / 'waf.yaml'}:")
        assert "waf.rules[0]: ModSecurity rejected the rules" in failed["errors"][0]
        assert f"File: {local}. Line: 2." in failed["errors"][0]
        assert envoy.get(attack).status == 403
        assert envoy.get("/public/get?probe=block-me").status == 403  # the last good rules keep serving
        assert envoy.get("/public/get?id=1").status == 200
    finally:
        envoy.stop()
        extauth.stop()
