"""Safe policy change on a running extauth: broken reloads keep the last good policy; shadow policies report."""

import signal
import urllib.request
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families
from support.checks import health_status
from support.gateways import demo_policies_with
from support.polling import wait_for

from extauth.devstack.gateway import (
    DEMO_POLICIES,
    EnvoyProcess,
    ExtauthProcess,
    extauth_config,
    forward_every_path,
    free_port,
)
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

ADMIN_FOR_READERS = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: candidate}
roles: {reader: []}
routes:
  - name: admin
    match: {path: {prefix: /admin/}}
    rules:
      - {name: readers-too, when: {roles: [reader]}}
"""
#: 20**30 leaves if expanded: the process would never answer again.
ALIAS_BOMB = "lol0: &a0 [" + ", ".join(["lol"] * 20) + "]\n" + "".join(
    f"lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 20) + "]\n" for i in range(1, 30))
RECURSIVE_ALIAS = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: loop}\nroutes: &routes [*routes]\n"
CATASTROPHIC_REGEX = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: redos}
routes:
  - name: words
    match: {path: {regex: '/words/(\\w+\\s?)*'}}
    public: true
"""


@pytest.fixture
def reader_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})


def test_broken_reload_keeps_serving_the_last_good_policy(
        tmp_path: Path, certs: DevCerts, reader_token: str, upstream: RunningUpstream, envoy_binary: Path) -> None:
    """Through Envoy: SIGHUP with a broken policy file changes nothing (same decisions, health SERVING, error
    logged with file:line); a later valid edit is picked up by the file watch without a signal."""
    policies = demo_policies_with(tmp_path)
    config = extauth_config(tmp_path, certs, policy={"path": str(policies), "watch_interval_seconds": 0.2})
    extauth = ExtauthProcess(tmp_path, config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    try:
        address = extauth.addresses[0]
        assert envoy.get("/admin/users", reader_token).status == 403
        first_version = _nth_decision(extauth, 1)["policy_version"]

        (policies / "broken.yaml").write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: x}\n"
                                              "routes:\n  - name: r\n    match: {path: {prefix: nope}}\n")
        extauth.process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "policy_reload_failed" in extauth.process.log_tail(50))
        assert f"{policies / 'broken.yaml'}:6: routes[0].match.path" in extauth.process.log_tail(50)
        assert envoy.get("/admin/users", reader_token).status == 403
        assert _nth_decision(extauth, 2)["policy_version"] == first_version
        extauth.wait_serving(timeout=1)
        assert health_status(address) == health_pb2.HealthCheckResponse.SERVING

        (policies / "broken.yaml").unlink()
        (policies / "demo.yaml").write_text((DEMO_POLICIES / "demo.yaml").read_text().replace(
            "roles: [admin]", "roles: [reader]"))
        wait_for(lambda: envoy.get("/admin/users", reader_token).status == 200)
        wait_for(lambda: _decisions(extauth)[-1]["decision"] == "allow")
        assert _decisions(extauth)[-1]["policy_version"] != first_version
        # The audit trail records both the rejected and the accepted change, beside the decisions.
        records = extauth.audit_events(kind=None)
        changes = [e["event"] for e in records if e["event"].startswith("policy_")]
        # The fix (delete one file, edit another) may be picked up by one poll or by two.
        assert changes[0] == "policy_reload_failed" and set(changes[1:]) == {"policy_reloaded"}
        failed = next(e for e in records if e["event"] == "policy_reload_failed")
        # The watch may read the broken file before the signal's turn comes; that reload answers the signal too.
        assert failed["trigger"] in ("sighup", "file_change") and failed["serving_version"] == first_version
        assert failed["errors"][0].startswith(f"{policies / 'broken.yaml'}:6: routes[0].match.path")
    finally:
        envoy.stop()
        extauth.stop()


def test_alias_bombs_recursive_aliases_and_catastrophic_regexes_are_rejected_and_the_watch_lives_on(
        tmp_path: Path, certs: DevCerts, reader_token: str, upstream: RunningUpstream, envoy_binary: Path) -> None:
    """Through Envoy: an alias bomb, a recursive alias and a backtracking regex dropped into the policy directory
    are rejected (file watch and SIGHUP alike) with events naming file:line, the old policy keeps answering,
    the rejections are counted by reason, and a later good edit is picked up by the same watch."""
    policies = demo_policies_with(tmp_path)
    metrics_port = free_port()
    config = extauth_config(tmp_path, certs, policy={"path": str(policies), "watch_interval_seconds": 0.2})
    config["server"]["metrics_listen"] = f"tcp:127.0.0.1:{metrics_port}"
    extauth = ExtauthProcess(tmp_path, config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    try:
        assert envoy.get("/admin/users", reader_token).status == 403
        first_version = _nth_decision(extauth, 1)["policy_version"]
        # The bomb first: every state of the directory from here on is broken.
        (policies / "bomb.yaml").write_text(ALIAS_BOMB)
        (policies / "loop.yaml").write_text(RECURSIVE_ALIAS)
        (policies / "redos.yaml").write_text(CATASTROPHIC_REGEX)
        expected = [
            f"{policies / 'bomb.yaml'}:1: YAML anchors and aliases are not allowed (anchor &a0)",
            f"{policies / 'loop.yaml'}:4: YAML anchors and aliases are not allowed (anchor &routes)",
            f"{policies / 'redos.yaml'}:6: routes[0].match.path.regex: may backtrack catastrophically: nested "
            r"quantifier: a repeated part contains a variable-length repeat that can match the text around it, "
            r"as in (a+)+ or (\w+\s?)*",
        ]
        wait_for(lambda: _failed_reloads(extauth) and _failed_reloads(extauth)[-1]["errors"] == expected)
        extauth.process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any(event["trigger"] == "sighup" for event in _failed_reloads(extauth)))
        for failed in _failed_reloads(extauth):
            assert failed["reason"] == "invalid" and failed["serving_version"] == first_version
            assert set(failed["errors"]) <= set(expected)
        assert _failed_reloads(extauth)[-1]["errors"] == expected

        assert envoy.get("/admin/users", reader_token).status == 403
        assert envoy.get("/words/a", reader_token).status == 403
        assert {event["policy_version"] for event in _decisions(extauth)} == {first_version}
        assert health_status(extauth.addresses[0]) == health_pb2.HealthCheckResponse.SERVING
        rejected = _scrape(metrics_port)[("extauth_policy_reload_rejections_total", (("reason", "invalid"),))]
        assert rejected == len(_failed_reloads(extauth))

        for name in ("bomb.yaml", "loop.yaml", "redos.yaml"):
            (policies / name).unlink()
        (policies / "demo.yaml").write_text((DEMO_POLICIES / "demo.yaml").read_text().replace(
            "roles: [admin]", "roles: [reader]"))
        wait_for(lambda: envoy.get("/admin/users", reader_token).status == 200)
        assert "policy_reloaded" in [event["event"] for event in extauth.audit_events(kind=None)]
    finally:
        envoy.stop()
        extauth.stop()


def test_shadow_policy_differences_are_audited_but_not_enforced(
        tmp_path: Path, certs: DevCerts, reader_token: str, upstream: RunningUpstream, envoy_binary: Path) -> None:
    """Through Envoy: a candidate policy allowing readers on /admin leaves the live 403 in place and audits
    the difference (and the reverse difference on /public)."""
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "candidate.yaml").write_text(ADMIN_FOR_READERS)
    config = extauth_config(tmp_path, certs, policy={"path": str(DEMO_POLICIES), "shadow_path": str(candidate)})
    extauth = ExtauthProcess(tmp_path, config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    try:
        assert envoy.get("/admin/users", reader_token).status == 403
        assert envoy.get("/public/x", reader_token).status == 200
        admin_event, public_event = _nth_decision(extauth, 1), _nth_decision(extauth, 2)
        assert (admin_event["decision"], admin_event["shadow_decision"], admin_event["shadow_differs"]) == (
            "deny", "allow", True)
        assert admin_event["shadow_rule"] == "candidate/admin/readers-too"
        assert (public_event["decision"], public_event["shadow_decision"], public_event["shadow_differs"]) == (
            "allow", "deny", True)
        assert public_event["shadow_reason"] == "no_matching_route"
    finally:
        envoy.stop()
        extauth.stop()


def _failed_reloads(extauth: ExtauthProcess) -> list[dict]:
    return [event for event in extauth.audit_events(kind=None) if event["event"] == "policy_reload_failed"]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _decisions(extauth: ExtauthProcess) -> list[dict]:
    return [event for event in extauth.audit_events() if event.get("event") == "decision"]


def _nth_decision(extauth: ExtauthProcess, n: int) -> dict:
    """The n-th decision event (1-based), once the audit writer has written it."""
    wait_for(lambda: len(_decisions(extauth)) >= n)
    return _decisions(extauth)[n - 1]


def test_owned_headers_follow_the_live_policy_across_a_reload(
        tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, envoy_binary: Path) -> None:
    """A header a newly loaded rule can set is stripped from client requests from the reload on, on every allow
    (public routes included), whether or not that rule fired."""
    policies = demo_policies_with(tmp_path)
    extauth = ExtauthProcess(tmp_path, extauth_config(tmp_path, certs, policy={"path": str(policies),
                                                                                "watch": False}))
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses, edit=forward_every_path)
    try:
        spoof = {"x-clearance": "top-secret"}
        assert envoy.get("/public/x", **spoof).json()["headers"].get("x-clearance") == "top-secret"
        (policies / "clearance.yaml").write_text(
            "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: clearance}\nroles: {spy: []}\nroutes:\n"
            "  - name: vault\n    match: {path: {prefix: /vault/}}\n    rules:\n"
            "      - {name: spies, when: {roles: [spy]}, headers: {x-clearance: '{claims.level}'}}\n")
        extauth.process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "x-clearance" not in envoy.get("/public/x", **spoof).json()["headers"])
        spy = mint_token(certs.jwt_signing_key, subject="mole", claims={"roles": ["spy"]})
        vault = envoy.get("/vault/x", spy, **spoof)
        assert vault.status == 200 and "x-clearance" not in vault.json()["headers"]  # no `level` claim: removed
    finally:
        envoy.stop()
        extauth.stop()
