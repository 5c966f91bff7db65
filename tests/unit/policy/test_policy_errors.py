"""One broken policy per error message, each with file, line and field."""

from pathlib import Path

import pytest

from extauth.config import ConfigError
from extauth.policy.loader import load_policies

HEAD = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
CASES = {
    "wrong apiVersion": (
        "apiVersion: extauth/v2\nkind: Policy\nmetadata: {name: p}\n",
        ["1: apiVersion: Input should be 'extauth/v1'"],
    ),
    "path without slash": (
        HEAD + "routes:\n  - name: r\n    match: {path: {prefix: api}}\n    public: true\n",
        ["6: routes[0].match.path: paths start with '/'"],
    ),
    "route with neither rules nor public": (
        HEAD + "routes:\n  - name: r\n    match: {path: {prefix: /api}}\n",
        ["5: routes[0]: a route needs rules, or `public: true`; unmatched requests are denied anyway"],
    ),
    "undefined role in rule": (
        HEAD + "routes:\n  - name: r\n    rules:\n      - name: x\n        when: {roles: [ghost]}\n",
        ["8: routes[0].rules[0].when.roles: undefined role 'ghost' (declare it under roles:)"],
    ),
    "inherits undefined role": (
        HEAD + "roles:\n  admin: [root]\n",
        ["5: roles.admin: inherits undefined role 'root'"],
    ),
    "inheritance cycle": (
        HEAD + "roles:\n  a: [b]\n  b: [a]\n",
        ["5: roles.a: inheritance cycle", "6: roles.b: inheritance cycle"],
    ),
    "unknown condition": (
        HEAD + "routes:\n  - name: r\n    rules:\n      - name: x\n        when: {colour: blue}\n",
        ["8: routes[0].rules[0].when.colour: unknown field"],
    ),
    "duplicate route name": (
        HEAD + "routes:\n  - {name: r, public: true}\n  - {name: r, public: true}\n",
        ["6: routes[1].name: route 'r' already defined in {path}"],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_policy_error_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    """A broken policy file is rejected with every problem as `file:line: field: message`."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    assert str(raised.value).splitlines() == [f"{path}:{line}".replace("{path}", str(path)) for line in expected]


def test_directory_without_policies_is_an_error(tmp_path: Path) -> None:
    """An empty policy directory is an error rather than a silent deny-everything."""
    with pytest.raises(ConfigError, match="no policy files"):
        load_policies(tmp_path)


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    """Each broken file in a policy directory contributes its own error."""
    (tmp_path / "a.yaml").write_text("apiVersion: extauth/v0\nkind: Policy\nmetadata: {name: a}\n")
    (tmp_path / "b.yaml").write_text("kind: Policy\nmetadata: {name: b}\n")
    with pytest.raises(ConfigError) as raised:
        load_policies(tmp_path)
    assert [issue.file.name for issue in raised.value.issues] == ["a.yaml", "b.yaml"]
