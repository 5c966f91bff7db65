"""`make run` names its processes by PID, so `kill -HUP` reaches extauth without a search."""

from pathlib import Path

from extauth.devstack.processes import ManagedProcess
from extauth.devstack.stack import process_banner


def test_banner_lists_every_pid_and_the_reload_command_names_extauth(tmp_path: Path) -> None:
    """Each child's real PID is printed, and the SIGHUP line carries extauth's, not Envoy's or the upstream's."""
    children = [ManagedProcess(name, ["sleep", "30"], tmp_path / f"{index}.log")
                for index, name in enumerate(["demo upstream", "extauth", "envoy"])]
    try:
        banner = process_banner(children)
    finally:
        for child in children:
            child.stop()
    upstream, extauth, envoy = (child.process.pid for child in children)
    assert f"demo upstream {upstream}  extauth {extauth}  envoy {envoy}" in banner
    assert f"kill -HUP {extauth} " in banner
