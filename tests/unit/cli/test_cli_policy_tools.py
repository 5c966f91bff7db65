"""`extauth test` and `extauth explain`: the policy author's tools."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extauth.cli import main

REPO = Path(__file__).parents[3]
POLICIES = REPO / "envoy" / "policies"


def test_shipped_policy_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo policy's own test cases pass, and the summary line counts them."""
    assert main(["test", str(POLICIES)]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.endswith("passed, 0 failed") and int(summary.split()[0]) >= 10


def test_a_failing_case_fails_the_run_and_names_file_line_and_difference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case expecting the wrong decision exits 1 with `FAIL name (file:line): what differed`."""
    shutil.copytree(POLICIES, tmp_path / "policies", ignore=shutil.ignore_patterns("tests"))
    tests = tmp_path / "policies" / "tests"
    tests.mkdir()
    (tests / "wrong.yaml").write_text(
        "apiVersion: extauth/v1\nkind: PolicyTest\nmetadata: {name: wrong}\ncases:\n"
        "  - name: readers may administer (they may not)\n"
        "    request: {url: /admin/users}\n"
        "    principal: {sub: alice, roles: [reader]}\n"
        "    expect: {decision: allow, rule: demo/admin/admins-only}\n")
    assert main(["test", str(tmp_path / "policies")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"FAIL readers may administer (they may not) ({tests / 'wrong.yaml'}:5): "
        "decision expected 'allow', got 'deny'; rule expected 'demo/admin/admins-only', got None",
        "0 passed, 1 failed",
    ]


def test_missing_test_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`extauth test` on policies without tests exits 2 (nothing was tested) rather than passing vacuously."""
    shutil.copy(POLICIES / "demo.yaml", tmp_path / "demo.yaml")
    assert main(["test", str(tmp_path)]) == 2
    assert "no policy test files" in capsys.readouterr().err


def test_explain_names_the_deciding_route_and_why_rules_failed(capsys: pytest.CaptureFixture[str]) -> None:
    """explain shows the matched route, each rule's failing condition, and exits 1 for a deny."""
    code = main(["explain", "--config", str(REPO / "envoy" / "extauth.yaml"), "GET", "/api/tenants/umbrella/orders/1",
                 "--sub", "bob", "--claim", "roles=reader", "--claim", "tenant=acme"])
    out = capsys.readouterr().out
    assert code == 1
    assert "route demo/tenant-orders-read: matched (decides)" in out
    assert "path parameter tenant is 'umbrella' but claim tenant is 'acme'" in out
    assert out.rstrip().endswith("decision: deny 403 forbidden (rule -)")


def test_explain_reports_screening_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """A request screening would refuse is explained by the screening rule, before any policy route."""
    code = main(["explain", "--config", str(REPO / "envoy" / "extauth.yaml"), "GET", "/public/x?f=../../etc/passwd"])
    assert code == 1
    assert "screening: blocked by screening/path_traversal: path_traversal (400)" in capsys.readouterr().out


CONFIG = REPO / "envoy" / "extauth.yaml"


def test_explain_shows_the_limits_that_apply_and_exits_0_on_allow(capsys: pytest.CaptureFixture[str]) -> None:
    """An allowed request lists each limit with its key, windows and failure mode; nothing is counted."""
    assert main(["explain", "--config", str(CONFIG), "GET", "/api/limited", "--sub", "alice",
                 "--claim", "roles=reader"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "decision: allow 200 ok (rule demo/limited/readers-may-read)"
    assert out[-1] == ('limit demo/limited/per-subject (public "per-subject"): key demo/limited/per-subject'
                       "|subject=alice, 5 per 10s, failure mode local")


def test_explain_says_when_no_limit_applies(capsys: pytest.CaptureFixture[str]) -> None:
    """An allowed request without limits says so rather than printing nothing."""
    assert main(["explain", "--config", str(CONFIG), "GET", "/public/hello"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "limits: none apply"


@pytest.mark.parametrize("argv", [
    ["GET", "/x", "--header", "no-colon"],
    ["GET", "/x", "--context", "no-equals"],
    ["GET", "/x", "--at", "next tuesday"],
    ["GET"],
    ["GET", "/x", "--sub", "a", "--token", "t"],
])
def test_explain_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option or argument is a usage error: exit 2 with one line naming it, never a traceback."""
    with pytest.raises(SystemExit) as exited:
        main(["explain", "--config", str(CONFIG), *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("extauth explain: error: ")


def test_explain_configuration_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing config file, or --shadow with no shadow policy configured, exits 2 with one line."""
    assert main(["explain", "--config", str(tmp_path / "missing.yaml"), "GET", "/x"]) == 2
    assert main(["explain", "--config", str(CONFIG), "--shadow", "GET", "/x"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory",
        "--shadow: the config has no policy.shadow_path"]


def test_explain_at_without_a_zone_is_utc(capsys: pytest.CaptureFixture[str]) -> None:
    """`--at 2026-11-24T10:00` is the same moment as `--at 2026-11-24T10:00:00+00:00`, whatever TZ the shell has."""
    outputs = []
    for moment in ("2026-11-24T10:00", "2026-11-24T10:00:00+00:00"):
        main(["explain", "--config", str(CONFIG), "--at", moment, "POST", "/admin/maintenance", "--sub", "root",
              "--claim", "roles=admin"])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    run = subprocess.run([sys.executable, "-m", "extauth", "explain", "--config", str(CONFIG), "--at",
                          "2026-11-24T10:00", "POST", "/admin/maintenance", "--sub", "root", "--claim", "roles=admin"],
                         capture_output=True, text=True, env={"TZ": "Pacific/Kiritimati", "PATH": "/usr/bin"},
                         cwd=REPO)
    assert run.stdout == outputs[0]


def test_explain_exit_status_of_the_process(tmp_path: Path) -> None:
    """As a process: 0 for an allow, 1 for a deny, 2 for a usage error (the documented codes)."""
    def status(*argv: str) -> int:
        return subprocess.run([sys.executable, "-m", "extauth", "explain", "--config", str(CONFIG), *argv],
                              capture_output=True, cwd=REPO).returncode

    assert (status("GET", "/public/hello"), status("GET", "/admin/users"), status("GET", "/x", "--header", "x")) \
        == (0, 1, 2)


SERVICE = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: billing}
roles: {reader: [], admin: [reader]}
routes:
  - name: invoices
    match: {path: {prefix: /billing/invoices}}
    rules:
      - {name: readers, when: {roles: [reader]}}
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 100, per: 1m}]}
  - name: webhooks
    match: {path: {exact: /billing/webhooks/stripe}, methods: [POST]}
    public: true
"""
SERVICE_TESTS = """\
apiVersion: extauth/v1
kind: PolicyTest
metadata: {name: billing}
cases:
  - name: readers read invoices
    request: {url: /billing/invoices/1}
    principal: {sub: alice, roles: [reader]}
    expect:
      decision: allow
      limits: [{name: billing/invoices/per-subject, key: "billing/invoices/per-subject|subject=alice"}]
  - name: anyone may call the webhook
    request: {method: POST, url: /billing/webhooks/stripe, source: 3.18.12.9}
    expect: {decision: allow, reason: public_route}
  - name: the webhook from elsewhere
    request: {method: POST, url: /billing/webhooks/stripe, source: 198.51.100.7}
    expect: {decision: allow}
"""
#: The candidate: a stricter limit, and the webhook only from Stripe's network.
CANDIDATE = SERVICE.replace("requests: 100, per: 1m", "requests: 10, per: 1m").replace(
    "    public: true\n",
    "    public: true\n    rules:\n      - {name: stripe, when: {source_cidrs: [3.18.12.0/23]}}\n")


def _service(tmp_path: Path) -> tuple[Path, Path]:
    live, candidate = tmp_path / "policies", tmp_path / "policies-next"
    (live / "tests").mkdir(parents=True)
    candidate.mkdir()
    (live / "billing.yaml").write_text(SERVICE)
    (live / "tests" / "billing.yaml").write_text(SERVICE_TESTS)
    (candidate / "billing.yaml").write_text(CANDIDATE)
    return live, candidate


def test_the_live_tests_run_against_a_candidate_and_list_changed_outcomes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--candidate DIR` runs DIR/tests against the candidate: failures are the candidate's, and every case whose
    outcome (decision, status, reason, rule, limits) differs from the live policy's is listed."""
    live, candidate = _service(tmp_path)
    assert main(["test", str(live)]) == 0
    capsys.readouterr()
    assert main(["test", str(live), "--candidate", str(candidate)]) == 1
    tests = live / "tests" / "billing.yaml"
    assert capsys.readouterr().out.splitlines() == [
        f"FAIL the webhook from elsewhere ({tests}:14): decision expected 'allow', got 'deny'",
        f"CHANGED readers read invoices ({tests}:5): allow 200 ok (rule billing/invoices/readers); limits "
        "billing/invoices/per-subject|subject=alice 100 per 60s, failure mode local -> allow 200 ok "
        "(rule billing/invoices/readers); limits billing/invoices/per-subject|subject=alice 10 per 60s, "
        "failure mode local",
        f"CHANGED anyone may call the webhook ({tests}:11): allow 200 public_route (rule billing/webhooks) -> "
        "allow 200 public_route (rule billing/webhooks/stripe)",
        f"CHANGED the webhook from elsewhere ({tests}:14): allow 200 public_route (rule billing/webhooks) -> "
        "deny 403 forbidden (rule -)",
        f"2 passed, 1 failed against {candidate}; 3 changed from {live}",
    ]


def test_a_candidate_that_changes_nothing_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The live policy as its own candidate: every case passes, none changed, exit 0."""
    live, _ = _service(tmp_path)
    assert main(["test", str(live), "--candidate", str(live)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"3 passed, 0 failed against {live}; 0 changed from {live}"]


def test_an_invalid_candidate_or_test_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A candidate that does not load, or a test file that does not validate, is a configuration error: exit 2."""
    live, candidate = _service(tmp_path)
    (candidate / "billing.yaml").write_text(SERVICE.replace("prefix: /billing/invoices", "prefix: billing"))
    assert main(["test", str(live), "--candidate", str(candidate)]) == 2
    assert "paths start with '/'" in capsys.readouterr().err
    (live / "tests" / "billing.yaml").write_text(SERVICE_TESTS.replace("decision: allow, reason",
                                                                       "verdict: allow, reason"))
    assert main(["test", str(live)]) == 2
    assert "unknown field" in capsys.readouterr().err
