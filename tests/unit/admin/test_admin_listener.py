"""The admin listener is never an open door: TCP only on loopback or behind mutual TLS (`server.insecure` does not
open it), never on a Check address; and the CLI reaches it over a unix socket or loopback only."""

import argparse
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from unit.config.test_server_listener import (
    FIXTURE_SETTINGS,
    LOOPBACK,
    REACHABLE_FROM_OTHER_HOSTS,
    certs,  # noqa: F401 (a fixture)
    tcp,
    tls_section,
)

from extauth.admin.client import admin_address
from extauth.cli import main
from extauth.config import ConfigError, load_config
from extauth.devtools.certs import DevCerts


def write_config(directory: Path, admin: dict[str, object], server: dict[str, object] | None = None) -> Path:
    (directory / "p.yaml").touch()
    path = directory / "extauth.yaml"
    path.write_text(yaml.safe_dump({"policy": {"path": "p.yaml"}, "server": server or {"insecure": True},
                                    "admin": admin}, sort_keys=False))
    return path


@FIXTURE_SETTINGS
@given(host=REACHABLE_FROM_OTHER_HOSTS)
def test_admin_on_an_address_other_hosts_reach_without_mutual_tls_does_not_load(tmp_path: Path, host: str) -> None:
    """Every spelling of a non-loopback TCP admin address fails to load at the admin line, even with
    `server.insecure: true`, which opens the Check listener only."""
    path = write_config(tmp_path, {"listen": tcp(host)})
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    line = path.read_text().splitlines().index("admin:") + 2  # its `listen:` line
    assert f"{path}:{line}: admin: admin.listen {tcp(host)} is reachable from other hosts without TLS" in message
    assert "server.insecure does not apply to the admin API" in message


@FIXTURE_SETTINGS
@given(host=LOOPBACK)
def test_admin_on_any_loopback_spelling_loads_without_tls(tmp_path: Path, host: str) -> None:
    """127.0.0.0/8, ::1 however spelt, IPv4-mapped loopback and `localhost`: reachable only from this host."""
    assert load_config(write_config(tmp_path, {"listen": tcp(host, 9902)})).admin is not None


def test_admin_on_a_remote_address_loads_with_mutual_tls(tmp_path: Path, certs: DevCerts) -> None:  # noqa: F811
    """With server.tls requiring client certificates, the admin API may listen where other hosts reach it."""
    config = load_config(write_config(tmp_path, {"listen": "tcp:0.0.0.0:9902", "allowed_clients": ["cn:oncall"]},
                                      {"listen": ["tcp:0.0.0.0:9001"], "tls": tls_section(certs)}))
    assert config.admin is not None and config.admin.allowed_clients == ["cn:oncall"]


@pytest.mark.parametrize("spelling", ["tcp:127.0.0.1:9001", "tcp:[::1]:9001", "unix:/tmp/x.sock"])
def test_admin_cannot_share_a_check_address(tmp_path: Path, spelling: str) -> None:
    """The admin API gets a listener of its own, whichever spelling of a Check address it names."""
    server = {"listen": ["tcp:127.0.0.1:9001", "tcp:::1:9001", "unix:/tmp/x.sock"]}
    with pytest.raises(ConfigError, match=r"is also a server\.listen address"):
        load_config(write_config(tmp_path, {"listen": spelling}, server))


def test_serve_refuses_a_remote_plaintext_admin_before_binding(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`extauth serve` exits 2 with the located error, and no socket is created."""
    path = write_config(tmp_path, {"listen": "tcp:0.0.0.0:9902"}, {"listen": [f"unix:{tmp_path / 'c.sock'}"]})
    assert main(["serve", "--config", str(path)]) == 2
    assert "admin.listen tcp:0.0.0.0:9902 is reachable from other hosts" in capsys.readouterr().err
    assert not (tmp_path / "c.sock").exists()


@given(host=REACHABLE_FROM_OTHER_HOSTS)
def test_the_cli_never_sends_admin_calls_in_plaintext_to_another_host(host: str) -> None:
    """`--admin HOST:PORT` is accepted for loopback only: the CLI speaks plaintext."""
    for spelling in (tcp(host), tcp(host).removeprefix("tcp:")):
        with pytest.raises(argparse.ArgumentTypeError):
            admin_address(spelling)


@given(host=LOOPBACK)
def test_the_cli_reaches_any_loopback_spelling(host: str) -> None:
    """Loopback TCP (a `kubectl port-forward`) in any spelling is a valid `--admin`."""
    assert admin_address(tcp(host, 9902).removeprefix("tcp:")).local_only()


def test_the_cli_reads_socket_paths_in_every_form(tmp_path: Path) -> None:
    """`unix:PATH`, an absolute path and a relative path with a `/` name the same socket."""
    target = tmp_path / "run" / "admin.sock"
    spellings = [f"unix:{target}", str(target), f"./{target.relative_to(Path.cwd())}" if target.is_relative_to(
        Path.cwd()) else str(target)]
    assert {admin_address(text).path for text in spellings} == {target}


@pytest.mark.parametrize("option", [["--token", "eyJ.x.y"], ["--at", "2026-01-01T00:00:00"],
                                    ["--config", "extauth.yaml"]])
def test_explain_live_refuses_what_the_live_process_cannot_take(option: list[str], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A token never leaves the CLI, and --at/--config do not apply to a live policy: usage error (2)."""
    status = main(["explain", "--live", "GET", "/", *option, "--admin", str(tmp_path / "admin.sock")])
    assert status == 2
    assert f"{option[0]} does not apply" in capsys.readouterr().err


def test_every_admin_command_names_the_missing_socket_and_how_to_enable_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No process on the socket: exit 1, one line naming the path and the config that enables the API."""
    socket = tmp_path / "admin.sock"
    for words in (["status"], ["reload"], ["explain", "--live", "GET", "/"], ["audit", "tail", "--deny"]):
        assert main([*words, "--admin", str(socket)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(socket) in err and "admin: {listen: unix:PATH}" in err, err
