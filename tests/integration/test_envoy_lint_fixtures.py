"""The seeded bad bootstraps of tests/unit/envoylint are configs Envoy itself accepts: each finding of
`extauth envoy-lint` is a misconfiguration that `envoy --mode validate` lets through."""

from pathlib import Path

import pytest

from extauth.devstack.envoy import validate_bootstrap
from extauth.devtools.certs import DevCerts

FIXTURES = Path(__file__).parents[1] / "unit" / "envoylint"


@pytest.mark.parametrize("bootstrap", [FIXTURES / "clean.yaml", *sorted((FIXTURES / "bad").glob("*.yaml"))],
                         ids=lambda path: path.name)
def test_seeded_bootstrap_passes_envoy_validate(bootstrap: Path, envoy_binary: Path, certs: DevCerts) -> None:
    """Envoy validates the fixture from the directory holding the certificates it names (server.crt, ca.crt)."""
    validate_bootstrap(bootstrap, cwd=certs.server_cert.parent)
