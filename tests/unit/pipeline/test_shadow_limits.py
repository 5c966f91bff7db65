"""Shadow policies and limits: the candidate's limits are worked out and compared in the audit event, never counted."""

from dataclasses import dataclass
from pathlib import Path

import pytest
from support.checks import check_request

from extauth.audit.sink import MemorySink
from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.clock import SystemClock
from extauth.config.schema import AuthenticationConfig
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.ratelimit import MemoryStorage, RateLimiter
from extauth.ratelimit.phase import RateLimitPhase
from extauth.respond import Responder

LIVE = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: billing}
roles: {reader: []}
routes:
  - name: invoices
    match: {path: {prefix: /invoices}}
    rules:
      - {name: readers, when: {roles: [reader]}}
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 2, per: 1m}]}
  - name: open
    match: {path: {prefix: /open}}
    public: true
"""
#: Stricter on invoices (1 per minute, and a new per-IP limit); unchanged on /open.
CANDIDATE = LIVE.replace("requests: 2, per: 1m}]}", "requests: 1, per: 1m}]}\n"
                         "      - {name: per-ip, key: [client_ip], windows: [{requests: 1, per: 1m}]}")


@dataclass
class Policies:
    current: CompiledPolicy
    shadow: CompiledPolicy | None


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


async def _pipeline(certs: DevCerts, tmp_path: Path, candidate: str | None) -> tuple[Pipeline, MemorySink]:
    clock = SystemClock()
    policies = []
    for name, text in (("live", LIVE), ("candidate", candidate)):
        if text is not None:
            (tmp_path / name).mkdir()
            (tmp_path / name / "billing.yaml").write_text(text)
            policies.append(compile_policy(tmp_path / name, clock))
    authentication = AuthenticationConfig.model_validate({"providers": [
        {"name": "dev", "issuer": DEV_ISSUER, "audiences": [DEV_AUDIENCE], "jwks": {"file": str(certs.jwks)},
         "primary": True}]})
    authenticator = Authenticator(authentication, clock)
    await authenticator.start()
    sink = MemorySink()
    pipeline = Pipeline(authenticator, Policies(policies[0], policies[1] if len(policies) > 1 else None),
                        Responder(authentication.forward), sink, "test/0",
                        rate_limit=RateLimitPhase(RateLimiter(MemoryStorage(), clock)))
    return pipeline, sink


async def _invoices(pipeline: Pipeline, certs: DevCerts, times: int) -> None:
    token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    for _ in range(times):
        await pipeline.check(check_request("/invoices/1", headers={"authorization": f"Bearer {token}"}))


async def test_the_candidates_different_limits_are_reported_in_the_audit_event(certs: DevCerts,
                                                                               tmp_path: Path) -> None:
    """A stricter candidate limit and a new one appear as removed/added, key and windows included."""
    pipeline, sink = await _pipeline(certs, tmp_path, CANDIDATE)
    await _invoices(pipeline, certs, 1)
    event = sink.events[0]
    assert (event["shadow_differs"], event["shadow_limits_differ"]) == (False, True)
    assert event["shadow_limit_changes"] == {
        "removed": ["billing/invoices/per-subject|subject=alice 2 per 60s, failure mode local"],
        "added": ["billing/invoices/per-subject|subject=alice 1 per 60s, failure mode local",
                  "billing/invoices/per-ip|client_ip=192.0.2.10 1 per 60s, failure mode local"],
    }


async def test_the_same_limits_are_reported_as_no_difference(certs: DevCerts, tmp_path: Path) -> None:
    """Where both policies apply the same limits (here: none), the event says they do not differ."""
    pipeline, sink = await _pipeline(certs, tmp_path, CANDIDATE)
    await pipeline.check(check_request("/open/x"))
    assert sink.events[0]["shadow_limits_differ"] is False
    assert "shadow_limit_changes" not in sink.events[0]


async def test_a_candidate_never_consumes_live_budget(certs: DevCerts, tmp_path: Path) -> None:
    """With a stricter candidate in shadow, the live limit counts exactly as it does without one."""
    outcomes = []
    for index, candidate in enumerate((None, CANDIDATE)):
        directory = tmp_path / str(index)
        directory.mkdir()
        pipeline, sink = await _pipeline(certs, directory, candidate)
        await _invoices(pipeline, certs, 3)
        outcomes.append([(event["decision"], event["reason"], event["rate_limit"].get("remaining"))
                         for event in sink.events])
    assert outcomes[0] == outcomes[1] == [("allow", "ok", 1), ("allow", "ok", 0), ("deny", "rate_limited", 0)]
