"""One broken configuration per error message: each names file, line and field."""

from pathlib import Path

import pytest

from extauth.config import ConfigError, load_config

VALID_PROVIDER = """\
    - name: dev
      issuer: https://idp.example
      audiences: [api]
      jwks: {file: jwks.json}
"""

CASES = {
    "unknown top-level field": (
        "policy: {path: p.yaml}\nsevrer: {}\n",
        ["2: sevrer: unknown field"],
    ),
    "missing policy": (
        "server: {workers: 1}\n",
        ["1: policy: Field required"],
    ),
    "listen address without port": (
        "policy: {path: p.yaml}\nserver:\n  listen:\n    - unix:/tmp/a.sock\n    - tcp:localhost\n",
        ["5: server.listen[1]: 'tcp:localhost' is not 'tcp:HOST:PORT' or 'unix:PATH'"],
    ),
    "workers out of range": (
        "policy: {path: p.yaml}\nserver:\n  workers: 0\n",
        ["3: server.workers: Input should be greater than or equal to 1"],
    ),
    "alg none is not an algorithm": (
        "policy: {path: p.yaml}\nauthentication:\n  providers:\n" + VALID_PROVIDER + "      algorithms: [none]\n",
        ["8: authentication.providers[0].algorithms[0]: Input should be 'RS256', 'RS384', 'RS512', 'PS256', "
         "'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384' or 'HS512'"],
    ),
    "shared-secret algorithm with JWKS": (
        "policy: {path: p.yaml}\nauthentication:\n  providers:\n" + VALID_PROVIDER + "      algorithms: [HS256]\n",
        ["4: authentication.providers[0]: algorithms ['HS256'] cannot be used with JWKS (asymmetric keys); "
         "allowed: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']"],
    ),
    "two key sources": (
        "policy: {path: p.yaml}\nauthentication:\n  providers:\n    - name: dev\n      issuer: i\n"
        "      audiences: [a]\n      jwks: {file: j.json, url: 'https://idp/jwks'}\n",
        ["7: authentication.providers[0].jwks: set exactly one of file, url, oidc_discovery (got ['file', 'url'])"],
    ),
    "duplicate issuer": (
        "policy: {path: p.yaml}\nauthentication:\n  providers:\n" + VALID_PROVIDER
        + VALID_PROVIDER.replace("name: dev", "name: other"),
        ["3: authentication: providers[1] has the same issuer as providers[0]: 'https://idp.example'"],
    ),
    "bad header name": (
        "policy: {path: p.yaml}\nauthentication:\n  forward:\n    subject_header: 'x subject'\n",
        ["4: authentication.forward.subject_header: 'x subject' is not a valid HTTP header name"],
    ),
    "duplicate key": (
        "policy: {path: p.yaml}\npolicy: {path: q.yaml}\n",
        ["2: policy: duplicate key"],
    ),
    "YAML syntax": (
        "policy: {path: p.yaml\nserver: {}\n",
        ["2: invalid YAML: expected ',' or '}', but got ':'"],
    ),
    "control character": (
        "policy: {path: p.yaml}\nserver: {workers: 1}\x07\n",
        ["2: invalid YAML: character #x0007 is not allowed"],
    ),
    "several errors at once": (
        "policy: {path: p.yaml}\nserver:\n  workers: 0\n  grace_period_seconds: -1\n",
        ["3: server.workers: Input should be greater than or equal to 1",
         "4: server.grace_period_seconds: Input should be greater than 0"],
    ),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_config_error_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    """Every problem in a config file is reported as `file:line: field: message`."""
    path = tmp_path / "extauth.yaml"
    path.write_text(text)
    (tmp_path / "p.yaml").touch()
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).splitlines() == [f"{path}:{line}" for line in expected]


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is reported as a ConfigError naming the file, not a traceback."""
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read: No such file or directory"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    """`policy.path` and key files are relative to the config file, not to the working directory."""
    (tmp_path / "conf" / "policies").mkdir(parents=True)
    path = tmp_path / "conf" / "extauth.yaml"
    path.write_text("policy: {path: policies/}\nauthentication:\n  providers:\n" + VALID_PROVIDER)
    config = load_config(path)
    assert config.policy.path == tmp_path / "conf" / "policies"
    assert config.authentication.providers[0].jwks.file == tmp_path / "conf" / "jwks.json"


def test_shipped_local_stack_config_is_valid() -> None:
    """The configuration `make run` uses loads without errors."""
    config = load_config(Path(__file__).parents[3] / "envoy" / "extauth.yaml")
    assert config.authentication.providers[0].name == "dev"


def test_an_issue_is_one_line_whatever_its_message_holds() -> None:
    """A library message with line breaks still prints as one line per issue."""
    from extauth.config import ConfigIssue

    issue = ConfigIssue(Path("extauth.yaml"), 3, "audit.signing_key", "first\nsecond\r\nthird")
    assert str(issue) == "extauth.yaml:3: audit.signing_key: first second third"
