"""Policies written inline in tests, compiled the way the server compiles them (fixtures in conftest.py)."""

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.decision import Decision
from extauth.documents.loader import load_policies
from extauth.identity.principal import Principal
from extauth.request import Request
from extauth.tools.synthetic import check_request

HEAD = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: p}
roles: {reader: [], writer: [reader], admin: [writer]}
"""

#: Tuesday 2026-11-24 10:00 UTC (11:00 in Berlin).
TUESDAY_MORNING = datetime.fromisoformat("2026-11-24T10:00:00+00:00").timestamp()

MakeEngine = Callable[..., PolicyEngine]


def engine_for(directory: Path, clock: ManualClock, routes: str) -> PolicyEngine:
    path = directory / "policy.yaml"
    path.write_text(HEAD + routes)
    return PolicyEngine(load_policies(path), clock)


def decide(engine: PolicyEngine, who: Principal | None, path: str = "/", method: str = "GET",
           **details: object) -> Decision:
    return engine.authorize(Request(check_request(path, method, **details)), who)  # type: ignore[arg-type]
