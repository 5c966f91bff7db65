"""A real gateway (extauth + Envoy) serving the demo policies plus a test's own policy files."""

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from extauth.devstack.envoy import Node
from extauth.devstack.gateway import DEMO_POLICIES, EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts


def demo_policies_with(run_dir: Path, extra: Mapping[str, str] | None = None) -> Path:
    """A copy of the demo policy directory (without its tests) in `run_dir`, plus `extra` files by name."""
    policies = run_dir / "policies"
    shutil.copytree(DEMO_POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    for name, text in (extra or {}).items():
        (policies / name).write_text(text)
    return policies


@contextmanager
def gateway_with_policies(run_dir: Path, certs: DevCerts, upstream_port: int, extra: Mapping[str, str],
                          edit: Callable[[Node], None] | None = None) -> Iterator[tuple[EnvoyProcess, ExtauthProcess]]:
    """extauth on the demo policies plus `extra`, behind the shipped Envoy bootstrap (changed by `edit`)."""
    policies = demo_policies_with(run_dir, extra)
    extauth = ExtauthProcess(run_dir / "extauth", extauth_config(run_dir / "extauth", certs,
                                                                  policy={"path": str(policies)}))
    try:
        extauth.wait_serving()
        envoy = EnvoyProcess(run_dir, certs, upstream_port, extauth.addresses, edit=edit)
        try:
            yield envoy, extauth
        finally:
            envoy.stop()
    finally:
        extauth.stop()
