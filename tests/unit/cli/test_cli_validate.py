"""`extauth validate`: it checks everything `serve` loads, reports every problem as one line, exits 0 / 1 / 2."""

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support.idp import IdentityProvider

from extauth.audit.signing import write_key_pair
from extauth.cli import main
from extauth.devstack.stack import create_empty_key_store
from extauth.devtools.certs import DevCerts, create_dev_certs

REPO = Path(__file__).parents[3]

CONFIG = """\
server:
  listen: ["unix:run/extauth.sock"]
authentication:
  providers:
    - name: corp
      issuer: https://login.example.com
      audiences: [api]
      algorithms: [RS256]
      jwks: {file: keys/jwks.json}
    - name: partner
      issuer: https://partner.example.net
      audiences: [api]
      algorithms: [HS256]
      shared_secret_file: keys/partner.secret
policy:
  path: policies/
audit:
  output: logs/audit.jsonl
  signing_key: keys/audit-signing.key
"""
POLICY = "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - {name: r, public: true}\n"


@pytest.fixture(scope="module")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def config(tmp_path: Path, dev_keys: DevCerts) -> Path:
    """A config whose every file exists and is usable: `validate` says ok."""
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(dev_keys.jwks, keys / "jwks.json")
    (keys / "partner.secret").write_text("s" * 32 + "\n")
    write_key_pair(keys)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    path = tmp_path / "extauth.yaml"
    path.write_text(CONFIG)
    return path


def errors_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.splitlines()


def test_a_config_whose_files_all_load_is_ok(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every file present and usable: exit 0 and a summary naming providers and the policy version."""
    assert main(["validate", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: ok (2 providers; policy ")


def rsa_private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


Breakage = Callable[[Path], None]
#: What is broken -> (how, the one line `validate` prints, with {dir} for the config's directory).
BROKEN: dict[str, tuple[Breakage, str]] = {
    "jwks file missing": (
        lambda d: (d / "keys/jwks.json").unlink(),
        "9: authentication.providers[0].jwks.file: cannot read {dir}/keys/jwks.json: No such file or directory"),
    "jwks file unreadable (a directory)": (
        lambda d: ((d / "keys/jwks.json").unlink(), (d / "keys/jwks.json").mkdir()),
        "9: authentication.providers[0].jwks.file: cannot read {dir}/keys/jwks.json: not a regular file"),
    "jwks file a device that never ends": (
        lambda d: ((d / "keys/jwks.json").unlink(), (d / "keys/jwks.json").symlink_to("/dev/zero")),
        "9: authentication.providers[0].jwks.file: cannot read /dev/zero: not a regular file"),
    "jwks file far too large": (
        lambda d: (d / "keys/jwks.json").write_bytes(b" " * (1024 * 1024 + 1)),
        "9: authentication.providers[0].jwks.file: cannot read {dir}/keys/jwks.json: 1048577 bytes; the limit is "
        "1048576"),
    "shared secret a FIFO": (
        lambda d: ((d / "keys/partner.secret").unlink(), os.mkfifo(d / "keys/partner.secret")),
        "14: authentication.providers[1].shared_secret_file: cannot read {dir}/keys/partner.secret: "
        "not a regular file"),
    "jwks file garbage": (
        lambda d: (d / "keys/jwks.json").write_text("-----BEGIN PUBLIC KEY-----\n"),
        "9: authentication.providers[0].jwks.file: {dir}/keys/jwks.json: JWKS is not valid JSON"),
    "jwks file without keys": (
        lambda d: (d / "keys/jwks.json").write_text('{"keys": []}'),
        "9: authentication.providers[0].jwks.file: {dir}/keys/jwks.json: JWKS has no usable signing keys "
        "(0 skipped)"),
    "jwks file with only a symmetric key": (
        lambda d: (d / "keys/jwks.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
        "9: authentication.providers[0].jwks.file: {dir}/keys/jwks.json: JWKS has no usable signing keys "
        "(1 skipped)"),
    "jwks keys for other algorithms": (
        lambda d: (d / "keys/jwks.json").write_text(json.dumps({"keys": [
            {**json.loads((d / "keys/jwks.json").read_text())["keys"][0], "alg": "PS256"}]})),
        "9: authentication.providers[0].jwks.file: {dir}/keys/jwks.json: no key can verify RS256 (the provider's "
        "algorithms); its keys verify PS256"),
    "shared secret missing": (
        lambda d: (d / "keys/partner.secret").unlink(),
        "14: authentication.providers[1].shared_secret_file: cannot read {dir}/keys/partner.secret: "
        "No such file or directory"),
    "shared secret too short": (
        lambda d: (d / "keys/partner.secret").write_text("tiger\n"),
        "14: authentication.providers[1].shared_secret_file: shared secret in {dir}/keys/partner.secret is 5 bytes; "
        "HS256 need at least 32"),
    "shared secret that is a PEM key": (
        lambda d: (d / "keys/partner.secret").write_bytes(rsa_private_key_pem()),
        "14: authentication.providers[1].shared_secret_file: {dir}/keys/partner.secret: The specified key is an "
        "asymmetric key or x509 certificate and should not be used as an HMAC secret."),
    "signing key missing": (
        lambda d: (d / "keys/audit-signing.key").unlink(),
        "19: audit.signing_key: cannot read {dir}/keys/audit-signing.key: No such file or directory"),
    "signing key a FIFO": (
        lambda d: ((d / "keys/audit-signing.key").unlink(), os.mkfifo(d / "keys/audit-signing.key")),
        "19: audit.signing_key: cannot read {dir}/keys/audit-signing.key: not a regular file"),
    "signing key garbage": (
        lambda d: (d / "keys/audit-signing.key").write_text("garbage"),
        "19: audit.signing_key: {dir}/keys/audit-signing.key is not an unencrypted PEM private key (Unable to load "
        "PEM file. See https://cryptography.io/en/latest/faq/#why-can-t-i-import-my-pem-file for more details. "
        "MalformedFraming)"),
    "signing key not Ed25519": (
        lambda d: (d / "keys/audit-signing.key").write_bytes(rsa_private_key_pem()),
        "19: audit.signing_key: {dir}/keys/audit-signing.key holds a RSAPrivateKey, not an Ed25519 private key "
        "(create one with `extauth audit keygen DIR`)"),
    "policy directory missing": (
        lambda d: shutil.rmtree(d / "policies"),
        "16: policy.path: {dir}/policies does not exist (a policy file, or a directory of *.yaml files)"),
    "policy directory empty": (
        lambda d: (d / "policies/p.yaml").unlink(),
        "16: policy.path: {dir}/policies holds no policy files (*.yaml, *.yml)"),
    "audit output is a directory": (
        lambda d: (d / "logs/audit.jsonl").mkdir(parents=True),
        "18: audit.output: {dir}/logs/audit.jsonl is a directory"),
    "audit output under a regular file": (
        lambda d: (d / "logs").write_text(""),
        "18: audit.output: cannot create {dir}/logs/audit.jsonl: {dir}/logs is not a directory"),
    "socket directory is a regular file": (
        lambda d: (d / "run").write_text(""),
        "2: server.listen[0]: cannot create {dir}/run/extauth.sock: {dir}/run is not a directory"),
    "socket path taken by a regular file": (
        lambda d: ((d / "run").mkdir(), (d / "run/extauth.sock").write_text("mine")),
        "2: server.listen[0]: {dir}/run/extauth.sock exists and is not a socket; extauth does not replace it"),
}


@pytest.mark.parametrize(("breakage", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_each_file_serve_would_fail_on_is_one_line_naming_the_field(
        config: Path, capsys: pytest.CaptureFixture[str], breakage: Breakage, expected: str) -> None:
    """A file `serve` could not load is exactly one line `config:line: field: message`, and exit 1."""
    breakage(config.parent)
    assert main(["validate", str(config)]) == 1
    assert errors_of(capsys) == [f"{config}:{expected.format(dir=config.parent)}"]


def test_every_problem_is_reported_in_one_run_sorted_by_file_and_line(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Key files, secrets, the signing key and the policy files' own errors all come out of one run."""
    directory = config.parent
    (directory / "keys/jwks.json").unlink()
    (directory / "keys/partner.secret").write_text("short")
    (directory / "keys/audit-signing.key").write_text("garbage")
    (directory / "policies/p.yaml").write_text(POLICY + "  - {name: q}\n")
    assert main(["validate", str(config)]) == 1
    assert [line.split(": ")[1] for line in errors_of(capsys)] == [
        "authentication.providers[0].jwks.file", "authentication.providers[1].shared_secret_file",
        "audit.signing_key", "routes[1]"]


def test_a_live_socket_at_the_listen_path_is_not_a_problem(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Validating beside a running server is fine: a socket at the path is judged by serve when it binds."""
    (config.parent / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(config.parent / "run/extauth.sock"))
        assert main(["validate", str(config)]) == 0


def test_tls_files_are_checked_when_the_config_loads(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """server.tls files are read by the schema itself: a missing certificate is one line at its field."""
    config.write_text(CONFIG.replace('  listen: ["unix:run/extauth.sock"]\n', "  tls:\n    cert_file: tls/server.crt\n"
                                     "    key_file: tls/server.key\n    require_client_certificate: false\n"))
    assert main(["validate", str(config)]) == 1
    assert errors_of(capsys) == [
        f"{config}:3: server.tls.cert_file: cannot read {config.parent}/tls/server.crt: "
        "No such file or directory",
        f"{config}:4: server.tls.key_file: cannot read {config.parent}/tls/server.key: "
        "No such file or directory"]


def test_the_shipped_config_validates_once_the_local_stack_files_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """envoy/extauth.yaml names the files `make run` writes to .run/certs: with them it is ok, without them
    validate names each one (a fresh checkout cannot serve until `make run` made them, the empty API key store
    included)."""
    shutil.copytree(REPO / "envoy", tmp_path / "envoy", ignore=shutil.ignore_patterns("tests"))
    config = tmp_path / "envoy" / "extauth.yaml"
    assert main(["validate", str(config)]) == 1
    assert [line.split(": ")[1] for line in errors_of(capsys)] == [
        "authentication.providers[0].jwks.file", "authentication.api_keys.store", "audit.signing_key"]
    create_dev_certs(tmp_path / ".run" / "certs")
    write_key_pair(tmp_path / ".run" / "certs")
    create_empty_key_store(tmp_path / ".run" / "apikeys.yaml")
    assert main(["validate", str(config)]) == 0
    assert "ok (1 providers; policy " in capsys.readouterr().out


def test_a_broken_config_reports_every_error_with_file_line_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that does not validate prints each problem as file:line: field: message and exits 1."""
    config = tmp_path / "extauth.yaml"
    config.write_text("server:\n  workers: 0\npolicy:\n  path: p.yaml\n  reload: yes\n")
    (tmp_path / "p.yaml").touch()
    assert main(["validate", str(config)]) == 1
    assert errors_of(capsys) == [
        f"{config}:2: server.workers: Input should be greater than or equal to 1",
        f"{config}:5: policy.reload: unknown field",
    ]


def test_policy_errors_name_their_own_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid config naming a broken policy reports the policy file and line."""
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n"
        "routes:\n  - name: r\n    rules:\n      - {name: x, when: {roles: [ghost]}}\n")
    (tmp_path / "extauth.yaml").write_text("policy: {path: policy.yaml}\n")
    assert main(["validate", str(tmp_path / "extauth.yaml")]) == 1
    assert errors_of(capsys) == [
        f"{tmp_path / 'policy.yaml'}:7: routes[0].rules[0].when.roles: undefined role 'ghost' "
        "(declare it under roles:)"]


def test_a_config_argument_naming_no_file_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2, not 1: there is nothing to judge valid or invalid."""
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert errors_of(capsys) == [f"{tmp_path / 'nope.yaml'}: does not exist"]


def test_bad_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option exits 2 with argparse's usage message."""
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--offline", "x.yaml"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --offline" in capsys.readouterr().err


def remote_config(config: Path, url: str) -> None:
    config.write_text(CONFIG.replace("jwks: {file: keys/jwks.json}", f"jwks: {{url: '{url}'}}"))


def test_online_fetches_each_remote_key_source_once_and_reports_it(
        config: Path, dev_keys: DevCerts, capsys: pytest.CaptureFixture[str]) -> None:
    """`--online` fetches the JWKS with the real fetcher and says how many keys came from where."""
    idp = IdentityProvider(dev_keys.jwks)
    try:
        remote_config(config, idp.jwks_url)
        assert main(["validate", str(config)]) == 0
        assert idp.requests == []  # offline: the URL is only checked as a URL
        assert main(["validate", "--online", str(config)]) == 0
        assert capsys.readouterr().out.splitlines()[-2] == f"provider 'corp': 1 keys from {idp.jwks_url}"
        assert idp.requests == ["/jwks.json"]
    finally:
        idp.stop()


def test_online_reports_an_unreachable_key_source_at_its_field(
        config: Path, dev_keys: DevCerts, capsys: pytest.CaptureFixture[str]) -> None:
    """An IdP answering 503 is one line at `jwks.url`, and exit 1."""
    idp = IdentityProvider(dev_keys.jwks)
    idp.failing = True
    try:
        remote_config(config, idp.jwks_url)
        assert main(["validate", "--online", str(config)]) == 1
        assert errors_of(capsys) == [
            f"{config}:9: authentication.providers[0].jwks.url: GET {idp.jwks_url} failed: HTTP status 503"]
    finally:
        idp.stop()


BROKEN_POLICY = Path(__file__).parent / "broken_policy"


def test_every_error_of_a_broken_policy_comes_out_of_one_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Schema errors, a check pydantic skips beside an unknown field, an unknown kind in a later document, role
    cycles and undefined roles, limit and regex errors, a screening compile error: one run, sorted by line."""
    (tmp_path / "extauth.yaml").write_text(f"policy: {{path: {BROKEN_POLICY}}}\n")
    assert main(["validate", str(tmp_path / "extauth.yaml")]) == 1
    file = BROKEN_POLICY / "billing.yaml"
    assert errors_of(capsys) == [f"{file}:{line}" for line in [
        "7: roles.billing-admin: inheritance cycle",
        "8: roles.billing-writer: inheritance cycle",
        "9: roles.billing-auditor: inherits undefined role 'auditor'",
        "15: routes[0].rules[0].when.roles: undefined role 'billing-reader' (declare it under roles:)",
        "19: routes[0].rules[1].limits[0].windows[0].per: '10x' is not a duration such as 500ms, 10s, 5m, 1h or 1d",
        "21: routes[0].limits[0].key[0]: the route's path has no parameter 'tenant'",
        "22: routes[1]: a route needs rules, or `public: true`; unmatched requests are denied anyway",
        "23: routes[1].match.sources: unknown field",
        "25: routes[2].match.path.regex: invalid regular expression: missing ), unterminated subpattern at position 9",
        "29: kind: unknown kind 'Polcy'; known kinds: Policy, Screening",
        "36: signatures[0].pattern: invalid regular expression: missing ), unterminated subpattern at position 5",
    ]]


def test_online_follows_oidc_discovery_and_reports_a_failure_at_its_field(
        config: Path, dev_keys: DevCerts, capsys: pytest.CaptureFixture[str]) -> None:
    """With `oidc_discovery` the discovery document names the JWKS; an IdP that is down is one line there."""
    idp = IdentityProvider(dev_keys.jwks)
    try:
        config.write_text(CONFIG.replace("https://login.example.com", idp.issuer)
                          .replace("jwks: {file: keys/jwks.json}", "jwks: {oidc_discovery: true}"))
        assert main(["validate", "--online", str(config)]) == 0
        assert f"provider 'corp': 1 keys from {idp.issuer}/jwks.json" in capsys.readouterr().out
        idp.failing = True
        assert main(["validate", "--online", str(config)]) == 1
        assert errors_of(capsys) == [
            f"{config}:9: authentication.providers[0].jwks.oidc_discovery: GET {idp.issuer}"
            "/.well-known/openid-configuration failed: HTTP status 503"]
    finally:
        idp.stop()


QUEUED_POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: p}
routes:
  - name: r
    public: true
    limits:
      - {name: l, key: [client_ip], windows: [{requests: 5, per: 1s}], on_limit: queue, max_wait: MAX_WAIT}
"""


@pytest.mark.parametrize("max_wait,timeout,valid", [
    ("400ms", None, True),                      # the shipped bootstrap: 0.5s
    ("500ms", None, False),
    ("2s", None, False),
    ("2s", "2.5s", True),
    ("2s", "{seconds: 2, nanos: 0}", False),
    ("100ms", "omitted", True),                 # Envoy's default 200ms
    ("250ms", "omitted", False),
])
def test_validate_rejects_a_max_wait_not_shorter_than_envoys_ext_authz_timeout(
        config: Path, capsys: pytest.CaptureFixture[str], max_wait: str, timeout: str | None, valid: bool) -> None:
    """A queued limit's max_wait is checked against the ext_authz timeout of the shipped bootstrap, or of the one
    `--envoy-bootstrap` names (a duration string, a `{seconds, nanos}` map, or Envoy's 200 ms default)."""
    (config.parent / "policies" / "p.yaml").write_text(QUEUED_POLICY.replace("MAX_WAIT", max_wait))
    args = ["validate", str(config)]
    if timeout is not None:
        shipped = (REPO / "envoy" / "envoy.yaml").read_text()
        replacement = "" if timeout == "omitted" else f"timeout: {timeout}"
        bootstrap = config.parent / "envoy.yaml"
        bootstrap.write_text(shipped.replace("timeout: 0.5s", replacement, 1))
        args += ["--envoy-bootstrap", str(bootstrap)]
    assert main(args) == (0 if valid else 1)
    errors = errors_of(capsys)
    if not valid:
        assert len(errors) == 1 and errors[0].startswith(f"{config.parent / 'policies' / 'p.yaml'}:8: max_wait: ")
        assert "ext_authz timeout" in errors[0]


def test_validate_with_a_missing_envoy_bootstrap_is_a_usage_error(config: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`--envoy-bootstrap` naming no file exits 2, as a missing config does."""
    assert main(["validate", str(config), "--envoy-bootstrap", str(config.parent / "nowhere.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
