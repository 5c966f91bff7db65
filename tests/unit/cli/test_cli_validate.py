"""`extauth validate`: exit status and messages an operator can act on."""

from pathlib import Path

import pytest

from extauth.cli import main

REPO = Path(__file__).parents[3]


def test_validate_accepts_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    """The local-stack config and its policies validate, and the summary names the policy version."""
    assert main(["validate", str(REPO / "envoy" / "extauth.yaml")]) == 0
    assert "ok (1 providers; policy " in capsys.readouterr().out


def test_validate_reports_every_error_with_file_line_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken config prints each problem as file:line: field: message and exits non-zero."""
    config = tmp_path / "extauth.yaml"
    config.write_text("server:\n  workers: 0\npolicy:\n  path: p.yaml\n  reload: yes\n")
    (tmp_path / "p.yaml").touch()
    assert main(["validate", str(config)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{config}:2: server.workers: Input should be greater than or equal to 1",
        f"{config}:5: policy.reload: unknown field",
    ]


def test_validate_reports_policy_errors_with_their_own_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config naming a broken policy reports the policy file and line."""
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
        "routes:\n  - name: r\n    rules:\n      - {name: x, when: {roles: [ghost]}}\n")
    (tmp_path / "extauth.yaml").write_text("policy: {path: policy.yaml}\n")
    assert main(["validate", str(tmp_path / "extauth.yaml")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{tmp_path / 'policy.yaml'}:7: routes[0].rules[0].when.roles: undefined role 'ghost' "
        "(declare it under roles:)")
