"""Safe policy change on a running extauth: broken reloads keep the last good policy; shadow policies report."""

import shutil
import signal
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from support.checks import check, health_status

from extauth.devstack.gateway import DEMO_POLICIES, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token

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


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def reader_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})


def test_broken_reload_keeps_serving_the_last_good_policy(tmp_path: Path, certs: DevCerts, reader_token: str) -> None:
    """SIGHUP with a broken policy file changes nothing (old decisions, health SERVING, error logged with
    file:line); a later valid edit is picked up by the file watch without a signal."""
    policies = tmp_path / "policies"
    shutil.copytree(DEMO_POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    config = extauth_config(tmp_path, certs, policy={"path": str(policies), "watch_interval_seconds": 0.2})
    extauth = ExtauthProcess(tmp_path, config)
    try:
        extauth.wait_serving()
        address = extauth.addresses[0]
        assert check(address, reader_token, "/admin/users").denied_response.status.code == 403
        first_version = extauth.audit_events()[-1]["policy_version"]

        (policies / "broken.yaml").write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: x}\n"
                                              "routes:\n  - name: r\n    match: {path: {prefix: nope}}\n")
        extauth.process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "policy_reload_failed" in extauth.process.log_tail(50))
        assert f"{policies / 'broken.yaml'}:6: routes[0].match.path" in extauth.process.log_tail(50)
        assert check(address, reader_token, "/admin/users").denied_response.status.code == 403
        assert extauth.audit_events()[-1]["policy_version"] == first_version
        extauth.wait_serving(timeout=1)
        assert health_status(address) == health_pb2.HealthCheckResponse.SERVING

        (policies / "broken.yaml").unlink()
        (policies / "demo.yaml").write_text((DEMO_POLICIES / "demo.yaml").read_text().replace(
            "roles: [admin]", "roles: [reader]"))
        wait_for(lambda: check(address, reader_token, "/admin/users").HasField("ok_response"))
        assert extauth.audit_events()[-1]["policy_version"] != first_version
    finally:
        extauth.stop()


def test_shadow_policy_differences_are_audited_but_not_enforced(
        tmp_path: Path, certs: DevCerts, reader_token: str) -> None:
    """A candidate policy that would allow readers on /admin leaves the live 403 in place and audits the difference."""
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "candidate.yaml").write_text(ADMIN_FOR_READERS)
    config = extauth_config(tmp_path, certs, policy={"path": str(DEMO_POLICIES), "shadow_path": str(candidate)})
    extauth = ExtauthProcess(tmp_path, config)
    try:
        extauth.wait_serving()
        address = extauth.addresses[0]
        assert check(address, reader_token, "/admin/users").denied_response.status.code == 403
        assert check(address, reader_token, "/public/x").HasField("ok_response")
        admin_event, public_event = extauth.audit_events()[-2:]
        assert (admin_event["decision"], admin_event["shadow_decision"], admin_event["shadow_differs"]) == (
            "deny", "allow", True)
        assert admin_event["shadow_rule"] == "candidate/admin/readers-too"
        assert (public_event["decision"], public_event["shadow_decision"], public_event["shadow_differs"]) == (
            "allow", "deny", True)
        assert public_event["shadow_reason"] == "no_matching_route"
    finally:
        extauth.stop()

