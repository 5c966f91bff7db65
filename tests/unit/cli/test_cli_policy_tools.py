"""`extauth test` and `extauth explain`: the policy author's tools."""

import shutil
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


def test_missing_test_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`extauth test` on policies without tests exits 1 rather than passing vacuously."""
    shutil.copy(POLICIES / "demo.yaml", tmp_path / "demo.yaml")
    assert main(["test", str(tmp_path)]) == 1
    assert "no policy test files" in capsys.readouterr().err


def test_explain_names_the_deciding_route_and_why_rules_failed(capsys: pytest.CaptureFixture[str]) -> None:
    """explain shows the matched route, each rule's failing condition, and exits 2 for a deny."""
    code = main(["explain", "--config", str(REPO / "envoy" / "extauth.yaml"), "GET", "/api/tenants/umbrella/orders/1",
                 "--sub", "bob", "--claim", "roles=reader", "--claim", "tenant=acme"])
    out = capsys.readouterr().out
    assert code == 2
    assert "route demo/tenant-orders-read: matched (decides)" in out
    assert "path parameter tenant is 'umbrella' but claim tenant is 'acme'" in out
    assert out.rstrip().endswith("decision: deny 403 forbidden (rule -)")


def test_explain_reports_screening_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """A request screening would refuse is explained by the screening rule, before any policy route."""
    code = main(["explain", "--config", str(REPO / "envoy" / "extauth.yaml"), "GET", "/public/x?f=../../etc/passwd"])
    assert code == 2
    assert "screening: blocked by screening/path_traversal: path_traversal (400)" in capsys.readouterr().out
