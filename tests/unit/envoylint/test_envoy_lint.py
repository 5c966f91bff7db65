"""`extauth envoy-lint`: every shipped Envoy bootstrap is clean, and each seeded misconfiguration is reported at
its field path with its message, whatever spelling Envoy accepts for the same config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.cli import main
from extauth.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from extauth.envoylint.loader import dotted, load_bootstrap
from extauth.envoylint.public_routes import PolicyPublicCheck
from extauth.envoylint.rules import RULES, Options
from extauth.envoylint.rules import lint as lint_bootstrap

HERE = Path(__file__).parent
REPO = HERE.parents[2]
CLEAN = HERE / "clean.yaml"
POLICY = HERE / "policy"
HCM = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
AUTHZ = f"{HCM}.http_filters[0]"
APP_TLS = "static_resources.clusters[1].transport_socket.typed_config"

#: bad/RULE.yaml -> (line, field path, message) of its one finding.
SEEDED = {
    "admin-not-loopback": (4, "admin.address.socket_address.address",
                           "the admin API listens on '0.0.0.0': anyone who reaches it can drain listeners, change "
                           "log levels and read the config"),
    "listener-plaintext": (11, "static_resources.listeners[0].filter_chains[0].transport_socket",
                           "listener 'ingress' accepts plaintext: tokens and identity headers cross the network "
                           "readable"),
    "upstream-tls-unverified": (77, f"{APP_TLS}.common_tls_context.validation_context",
                                "cluster 'app' accepts any server certificate: a man in the middle reads the "
                                "identity headers extauth adds"),
    "upstream-tls-no-sni": (77, f"{APP_TLS}.sni", "cluster 'app' sends no SNI: a shared upstream may answer with "
                            "another name's certificate (or refuse)"),
    "ext-authz-failure-mode-allow": (39, f"{AUTHZ}.typed_config.failure_mode_allow",
                                     "failure_mode_allow: true lets every request through unauthenticated while "
                                     "extauth is down, slow or unreachable"),
    "ext-authz-no-timeout": (37, f"{AUTHZ}.typed_config.grpc_service.timeout",
                             "the ext_authz timeout is implicit (Envoy's 200ms default): the Check budget is "
                             "nowhere written down"),
    "ext-authz-cluster-not-http2": (37, f"{AUTHZ}.typed_config.grpc_service.envoy_grpc.cluster_name",
                                    "cluster 'extauth' speaks HTTP/1.1: gRPC Checks fail and every request is "
                                    "refused (or let through with failure_mode_allow)"),
    "ext-authz-missing": (33, f"{HCM}.http_filters", "no ext_authz filter: every request through this connection "
                          "manager is unchecked"),
    "ext-authz-partial": (34, f"{AUTHZ}.disabled", "ext_authz is disabled unless a route enables it: a route that "
                          "forgets to is unchecked"),
    "route-skips-ext-authz": (52, f'{HCM}.route_config.virtual_hosts[0].routes[0].typed_per_filter_config'
                              '["envoy.filters.http.ext_authz"]',
                              "route prefix: /api/ skips ext_authz but is not public in the policy: anonymous GET "
                              "/api/ is denied (no_matching_route)"),
    "normalize-path-off": (22, f"{HCM}.normalize_path", "paths are not normalised before ext_authz: "
                           "`/public/../admin` is authorised as a public path"),
    "merge-slashes-off": (25, f"{HCM}.merge_slashes", "`//admin` is authorised as written and may reach the "
                          "upstream as `/admin`"),
    "escaped-slashes-not-rejected": (26, f"{HCM}.path_with_escaped_slashes_action",
                                     "escaped slashes are KEEP_UNCHANGED: `/public%2F..%2Fadmin` is authorised as "
                                     "one path and may be decoded as another upstream"),
    "xff-trust": (28, f"{HCM}.xff_num_trusted_hops", "1 X-Forwarded-For hop(s) are trusted on a listener reachable "
                  "from the network: without a proxy in front, the client chooses its own address"),
    "no-access-log": (22, f"{HCM}.access_log", "requests through this connection manager leave no access log (nor "
                      "completion events)"),
    "invalid-waiver": (39, "", "not a waiver: '# envoy-lint: allow failure-mode-allow'"),
}


def lint(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[dict[str, object]]]:
    capsys.readouterr()
    code = main(["envoy-lint", "--format", "json", *map(str, args)])
    return code, json.loads(capsys.readouterr().out)


def lint_text(tmp_path: Path, text: str, *options: str) -> list[tuple[str, str]]:
    """(rule, path) of each finding in a bootstrap given as text, checked against the fixture policy."""
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(text)
    loaded = load_bootstrap(bootstrap)
    findings = lint_bootstrap(loaded.bootstrap, Options(frozenset(options), PolicyPublicCheck(POLICY)))
    return sorted((finding.rule, dotted(finding.path)) for finding in findings
                  if loaded.waiver_for(finding.path, finding.rule) is None)


def shipped_bootstraps() -> list[Path]:
    """Every Envoy bootstrap the project ships: the local stack's and the ones in the Kubernetes manifests."""
    candidates = [*sorted((REPO / "envoy").glob("*.yaml")), *sorted((REPO / "k8s").rglob("envoy*.yaml"))]
    return [path for path in candidates if "static_resources" in (yaml.safe_load(path.read_text()) or {})]


def test_every_shipped_envoy_bootstrap_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    """envoy/*.yaml and k8s/**/envoy*.yaml pass the lint with the shipped policies: no finding, not even a
    warning (the k8s probe listener carries a waiver with its reason)."""
    assert shipped_bootstraps()
    assert lint(capsys, *shipped_bootstraps(), "--policy", REPO / "envoy" / "policies") == (EXIT_OK, [])


def test_clean_fixture_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    """The base of every seeded fixture has no finding: each bad fixture differs from it by its one mistake."""
    assert lint(capsys, CLEAN, "--policy", POLICY) == (EXIT_OK, [])


@pytest.mark.parametrize("rule", sorted(SEEDED))
def test_seeded_misconfiguration_is_reported_at_its_field_path(rule: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """bad/RULE.yaml yields exactly one finding: that rule, at the offending field's path and line, with a fix."""
    line, path, message = SEEDED[rule]
    code, findings = lint(capsys, HERE / "bad" / f"{rule}.yaml", "--policy", POLICY)
    assert code == EXIT_FAILED
    assert [(f["rule"], f["line"], f["path"], f["message"], f["severity"]) for f in findings] == \
        [(rule, line, path, message, "error")]
    assert findings[0]["fix"]


def test_every_rule_has_a_seeded_fixture() -> None:
    """No rule ships without the bad config that proves it fires."""
    assert set(SEEDED) == set(RULES)


def test_a_route_skipping_ext_authz_is_a_warning_without_a_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --policy the lint cannot tell whether the route is public: it asks for a review, exit 0."""
    code, findings = lint(capsys, CLEAN)
    assert code == EXIT_OK
    assert [(f["rule"], f["severity"], f["message"]) for f in findings] == [
        ("route-skips-ext-authz", "warning", "route prefix: /public/ skips ext_authz: review that it is public")]


def test_text_output_names_file_line_path_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    """One line per finding: FILE:LINE: PATH: severity: message (fix: ...) [rule]."""
    bad = HERE / "bad" / "merge-slashes-off.yaml"
    assert main(["envoy-lint", str(bad)]) == EXIT_FAILED
    out = capsys.readouterr().out.splitlines()
    assert f"{bad}:25: {HCM}.merge_slashes: error: " in out[0] and out[0].endswith(
        "(fix: set merge_slashes: true) [merge-slashes-off]")


@pytest.mark.parametrize("where", ["same line", "line above", "list entry"])
def test_a_waiver_with_a_reason_silences_its_rule(where: str, tmp_path: Path) -> None:
    """`# envoy-lint: allow RULE -- reason` on the field's line, the comment above it or its list entry's line."""
    text = (HERE / "bad" / "ext-authz-failure-mode-allow.yaml").read_text()
    waiver = "# envoy-lint: allow ext-authz-failure-mode-allow -- availability over safety, signed off"
    if where == "same line":
        text = text.replace("failure_mode_allow: true", f"failure_mode_allow: true  {waiver}")
    elif where == "line above":
        text = text.replace("              failure_mode_allow: true", f"              {waiver}\n"
                            "              failure_mode_allow: true")
    else:
        text = text.replace("          - name: envoy.filters.http.ext_authz",
                            f"          - name: envoy.filters.http.ext_authz  {waiver}")
    assert lint_text(tmp_path, text) == []


def test_a_waiver_of_another_rule_or_another_field_does_not_apply(tmp_path: Path) -> None:
    """A waiver silences only the rule it names, and only on the entries that contain it."""
    text = (HERE / "bad" / "ext-authz-failure-mode-allow.yaml").read_text()
    text = text.replace("failure_mode_allow: true", "failure_mode_allow: true  # envoy-lint: allow "
                        "ext-authz-no-timeout -- wrong rule")
    text = text.replace("merge_slashes: true", "merge_slashes: true  # envoy-lint: allow "
                        "ext-authz-failure-mode-allow -- wrong field")
    assert lint_text(tmp_path, text) == [("ext-authz-failure-mode-allow",
                                          f"{AUTHZ}.typed_config.failure_mode_allow")]


def test_a_waiver_naming_an_unknown_rule_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt rule name waives nothing, and says so instead of passing silently."""
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(CLEAN.read_text().replace("merge_slashes: true", "merge_slashes: true  # envoy-lint: "
                                                   "allow merge-slash-off -- typo"))
    code, findings = lint(capsys, bootstrap, "--policy", POLICY)
    assert code == EXIT_FAILED
    assert [(f["rule"], f["message"]) for f in findings] == [("invalid-waiver",
                                                              "waives unknown rule(s) merge-slash-off")]


def test_a_plaintext_listener_is_allowed_only_by_name(tmp_path: Path) -> None:
    """--allow-plaintext-listener NAME excuses that listener only."""
    text = (HERE / "bad" / "listener-plaintext.yaml").read_text()
    assert lint_text(tmp_path, text, "ingress") == []
    assert lint_text(tmp_path, text, "health") == [("listener-plaintext",
                                                    "static_resources.listeners[0].filter_chains[0].transport_socket")]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _respell(value: object, camel: st.DataObject) -> object:
    """The same config with field names in camelCase where `camel` says so (Envoy accepts both spellings)."""
    if isinstance(value, dict):
        return {(_camel(key) if "@" not in key and "." not in key and camel.draw(st.booleans()) else key):
                _respell(item, camel) for key, item in value.items()}
    if isinstance(value, list):
        return [_respell(item, camel) for item in value]
    return value


@settings(max_examples=25, deadline=None)
@given(rule=st.sampled_from(sorted(set(SEEDED) - {"invalid-waiver"})), camel=st.data())
def test_camel_case_spellings_are_judged_the_same(rule: str, camel: st.DataObject, tmp_path_factory) -> None:
    """Any mix of camelCase and snake_case field names yields the same finding at the same (snake_case) path."""
    tmp_path = tmp_path_factory.mktemp("respelled")
    data = yaml.safe_load((HERE / "bad" / f"{rule}.yaml").read_text())
    findings = lint_text(tmp_path, json.dumps(_respell(data, camel)))
    assert findings == [(rule, SEEDED[rule][1])]


LOOPBACK = st.one_of(st.ip_addresses(network="127.0.0.0/8"), st.just("::1"), st.just("::ffff:127.0.0.1"))


@settings(max_examples=40, deadline=None)
@given(address=st.one_of(LOOPBACK.map(str), st.ip_addresses().filter(lambda ip: not ip.is_loopback).map(str),
                         st.sampled_from(["localhost", "127.1", "0", "::", "0.0.0.0"])))
def test_admin_is_clean_exactly_when_bound_to_loopback(address: str, tmp_path_factory) -> None:
    """Every loopback spelling is clean; any other address or a host name is reported."""
    tmp_path = tmp_path_factory.mktemp("admin")
    text = CLEAN.read_text().replace("address: 127.0.0.1, port_value: 9901", f"address: '{address}', port_value: 1")
    loopback = address in ("::1", "::ffff:127.0.0.1") or (address.startswith("127.") and address.count(".") == 3)
    assert lint_text(tmp_path, text) == ([] if loopback else [("admin-not-loopback",
                                                               "admin.address.socket_address.address")])


@pytest.mark.parametrize("level", ["virtual host", "weighted cluster", "filter config"])
def test_every_way_of_disabling_ext_authz_on_a_route_is_checked(level: str, tmp_path: Path) -> None:
    """Disabling at the virtual host, on a weighted cluster, or by FilterConfig `disabled` is a skip too."""
    per_route = ('{"envoy.filters.http.ext_authz": {"@type": "type.googleapis.com/envoy.extensions.filters.http.'
                 'ext_authz.v3.ExtAuthzPerRoute", "disabled": true}}')
    if level == "filter config":
        per_route = ('{"envoy.filters.http.ext_authz": {"@type": "type.googleapis.com/envoy.config.route.v3.'
                     'FilterConfig", "disabled": true}}')
    data = yaml.safe_load(CLEAN.read_text())
    host = data["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    del host["routes"][0]
    if level == "virtual host":
        host["typed_per_filter_config"] = json.loads(per_route)
        where = f"{HCM}.route_config.virtual_hosts[0].typed_per_filter_config"
    elif level == "weighted cluster":
        host["routes"][0]["route"] = {"weighted_clusters": {"clusters": [
            {"name": "app", "weight": 1, "typed_per_filter_config": json.loads(per_route)}]}}
        where = f"{HCM}.route_config.virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0]" \
                ".typed_per_filter_config"
    else:
        host["routes"][0]["typed_per_filter_config"] = json.loads(per_route)
        where = f"{HCM}.route_config.virtual_hosts[0].routes[0].typed_per_filter_config"
    assert lint_text(tmp_path, json.dumps(data)) == [
        ("route-skips-ext-authz", f'{where}["envoy.filters.http.ext_authz"]')]


def test_a_prefix_route_is_public_only_if_everything_below_it_is(tmp_path: Path) -> None:
    """A policy that makes only /healthz (GET) public does not cover a route that skips ext_authz for /healthz
    with every method."""
    text = CLEAN.read_text().replace("match: { prefix: /public/ }", "match: { path: /healthz }")
    assert lint_text(tmp_path, text) == [
        ("route-skips-ext-authz", f'{HCM}.route_config.virtual_hosts[0].routes[0].typed_per_filter_config'
                                  '["envoy.filters.http.ext_authz"]')]


@pytest.mark.parametrize(("content", "error"), [
    (None, "No such file"),
    ("admin: [unclosed", "not valid YAML"),
    ("- a list", "an Envoy bootstrap is a mapping"),
    ("admin: \udcff", "not UTF-8 text"),
    ("admin: {adress: {}}", "not an Envoy v3 bootstrap: Unknown field 'adress' in message Admin."),
    ('static_resources: {listeners: [{filter_chains: [{filters: [{name: x, typed_config: {"@type": '
     'type.googleapis.com/envoy.extensions.nothing.v3.Nothing}}]}]}]}', "unknown @type"),
])
def test_unreadable_or_invalid_input_is_a_usage_error(content: str | None, error: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is missing, not YAML, or not an Envoy bootstrap exits 2 with one line naming it."""
    bootstrap = tmp_path / "bootstrap.yaml"
    if content is not None:
        bootstrap.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert main(["envoy-lint", str(bootstrap)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bootstrap) in err and error in err


def test_the_check_path_never_imports_the_envoy_models() -> None:
    """serve, the pipeline and the CLI's parser load without envoy-data-plane (the lint's extra)."""
    script = ("import sys, extauth.server, extauth.pipeline, extauth.cli; extauth.cli._parser(); "
              "sys.exit(any(m.startswith(('envoy_data_plane', 'betterproto2')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 0


@pytest.mark.parametrize(("match", "denied"), [
    ("{ prefix: /public }", "/publicx"),
    ("{ prefix: /public/, case_sensitive: false }", "/PUBLIC/"),
    ("{ safe_regex: { regex: '/public/.*' } }", None),
])
def test_every_path_a_skipping_route_matches_must_be_public(match: str, denied: str | None, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A prefix without a trailing slash also matches longer names, a case-insensitive route other cases (here
    against a case-sensitive policy), and a regex cannot be sampled: each is reported, naming the request the
    policy denies."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "public.yaml").write_text((POLICY / "public.yaml").read_text().replace(
        "path: {prefix: /public/}", "path: {prefix: /public/, case_sensitive: true}"))
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(CLEAN.read_text().replace("match: { prefix: /public/ }", f"match: {match}"))
    code, findings = lint(capsys, bootstrap, "--policy", policy)
    assert code == EXIT_FAILED
    assert [f["rule"] for f in findings] == ["route-skips-ext-authz"]
    expected = f"anonymous GET {denied} is denied" if denied else "a safe_regex path match cannot be checked"
    assert expected in str(findings[0]["message"])


def test_a_skipping_route_is_checked_for_each_host_of_its_virtual_host(tmp_path: Path) -> None:
    """The policy is asked with the virtual host's own domains, so a public route scoped to one host does not
    cover a virtual host that also serves another."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "public.yaml").write_text((POLICY / "public.yaml").read_text().replace(
        "path: {prefix: /public/}", "path: {prefix: /public/}\n      hosts: [docs.example]"))
    data = yaml.safe_load(CLEAN.read_text())
    host = data["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    bootstrap = tmp_path / "bootstrap.yaml"
    for domains, findings in ((["docs.example"], 0), (["docs.example", "*.internal.example"], 1)):
        host["domains"] = domains
        bootstrap.write_text(json.dumps(data))
        loaded = load_bootstrap(bootstrap)
        assert len(lint_bootstrap(loaded.bootstrap, Options(public_check=PolicyPublicCheck(policy)))) == findings


@pytest.mark.parametrize("action", ["IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED", "REJECT_REQUEST",
                                    "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD"])
def test_escaped_slashes_are_safe_only_when_rejected_or_unescaped(action: str, tmp_path: Path) -> None:
    """Every value of path_with_escaped_slashes_action is judged: only keeping %2F for the upstream is a finding."""
    text = CLEAN.read_text().replace("path_with_escaped_slashes_action: REJECT_REQUEST",
                                     f"path_with_escaped_slashes_action: {action}")
    unsafe = action in ("IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED")
    assert [rule for rule, _ in lint_text(tmp_path, text)] == (["escaped-slashes-not-rejected"] if unsafe else [])


@pytest.mark.parametrize(("timeout", "finding"), [
    ("0s", True), ("0.000s", True), ("{seconds: 0, nanos: 0}", True), ("{}", True),
    ("0.001s", False), ("{nanos: 500000000}", False), ("2s", False)])
def test_an_ext_authz_timeout_must_be_positive_in_every_spelling(timeout: str, finding: bool, tmp_path: Path) -> None:
    """A zero deadline (no deadline at all) is found however the Duration is written."""
    text = CLEAN.read_text().replace("timeout: 0.5s", f"timeout: {timeout}")
    assert [rule for rule, _ in lint_text(tmp_path, text)] == (["ext-authz-no-timeout"] if finding else [])


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_xff_trust_is_judged_only_at_the_edge(address: str, tmp_path: Path) -> None:
    """A listener only local processes reach may take the client address from X-Forwarded-For; one bound to the
    network may not."""
    text = (HERE / "bad" / "xff-trust.yaml").read_text().replace("use_remote_address: true",
                                                                 "use_remote_address: false")
    assert [rule for rule, _ in lint_text(tmp_path, text)] == ["xff-trust", "xff-trust"]
    local = text.replace("address: 0.0.0.0, port_value: 8443", f"address: '{address}', port_value: 8443")
    assert lint_text(tmp_path, local) == []


@pytest.mark.parametrize(("spelling", "allows"), [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True), ('"true"', True),
    ("false", False), ("no", False), ("0", False), ('"false"', False)])
def test_failure_mode_allow_is_judged_by_its_value_not_its_spelling(spelling: str, allows: bool,
                                                                    tmp_path: Path) -> None:
    """Every YAML spelling of a boolean is read as the typed model reads it: a quoted "false" is not true."""
    text = CLEAN.read_text().replace("failure_mode_allow: false", f"failure_mode_allow: {spelling}")
    assert [rule for rule, _ in lint_text(tmp_path, text)] == (["ext-authz-failure-mode-allow"] if allows else [])


@pytest.mark.parametrize(("validation", "finding_at"), [
    ("validation_context: { trusted_ca: { filename: ca.crt }, trust_chain_verification: ACCEPT_UNTRUSTED }",
     "validation_context.trust_chain_verification"),
    ("validation_context: { trusted_ca: {} }", "validation_context.trusted_ca"),
    ("validation_context: { match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: app } }] }",
     "validation_context.trusted_ca"),
    ("combined_validation_context: { default_validation_context: {} }",
     "combined_validation_context.default_validation_context.trusted_ca"),
    ("combined_validation_context: { default_validation_context: { trusted_ca: { filename: ca.crt } } }", None),
    ("validation_context_sds_secret_config: { name: upstream-ca }", None),
    ("validation_context: { system_root_certs: {} }", None),
])
def test_upstream_tls_verifies_the_server_in_every_form(validation: str, finding_at: str | None,
                                                        tmp_path: Path) -> None:
    """A CA from a file, SDS, the system roots or a combined context verifies; an empty data source, SAN checks
    without a CA, or ACCEPT_UNTRUSTED does not."""
    text = CLEAN.read_text().replace("          validation_context:\n            trusted_ca: { filename: ca.crt }",
                                     f"          {validation}")
    expected = [("upstream-tls-unverified", f"{APP_TLS}.common_tls_context.{finding_at}")] if finding_at else []
    assert lint_text(tmp_path, text) == expected


def test_auto_sni_stands_for_an_explicit_sni(tmp_path: Path) -> None:
    """A cluster that derives SNI from the request's host (auto_sni) sends SNI."""
    text = (HERE / "bad" / "upstream-tls-no-sni.yaml").read_text().replace("\n  - name: app\n", """
  - name: app
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        upstream_http_protocol_options: { auto_sni: true }
        explicit_http_config: { http_protocol_options: {} }
""")
    assert lint_text(tmp_path, text) == []


def test_a_connection_manager_that_forwards_nothing_needs_no_ext_authz(tmp_path: Path) -> None:
    """A probe listener whose every route answers itself has no upstream to guard: only TLS and the access log
    are asked of it; one route that forwards brings every rule back."""
    probe = """
  - name: health
    address:
      socket_address: { address: 0.0.0.0, port_value: 8081 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: health
          route_config:
            virtual_hosts:
            - name: health
              domains: ["*"]
              routes:
              - match: { prefix: / }
                direct_response: { status: 404 }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
    text = CLEAN.read_text().replace("  listeners:\n", "  listeners:" + probe, 1)
    health = "static_resources.listeners[0].filter_chains[0]"
    assert lint_text(tmp_path, text) == [("listener-plaintext", f"{health}.transport_socket"),
                                         ("no-access-log", f"{health}.filters[0].typed_config.access_log")]
    forwarding = text.replace("direct_response: { status: 404 }", "route: { cluster: app }", 1)
    assert {rule for rule, _ in lint_text(tmp_path, forwarding)} == {
        "listener-plaintext", "no-access-log", "ext-authz-missing", "normalize-path-off", "merge-slashes-off",
        "escaped-slashes-not-rejected", "xff-trust"}
