"""The Check pipeline end to end in-process: phases in order, fail closed, one audit event per decision."""

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from google.rpc import code_pb2
from support.checks import check_request

from extauth.audit.sink import MemorySink
from extauth.bundle.compiled import compile_policy
from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.config.schema import AuthenticationConfig
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.respond import Responder

DEMO_POLICIES = Path(__file__).parents[3] / "envoy" / "policies"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def authentication(certs: DevCerts) -> AuthenticationConfig:
    return AuthenticationConfig.model_validate({"providers": [
        {"name": "dev", "issuer": DEV_ISSUER, "audiences": [DEV_AUDIENCE], "jwks": {"file": str(certs.jwks)},
         "primary": True}]})


class BrokenEngine:
    """An engine whose evaluation raises, standing in for any bug inside a phase."""

    def authorize(self, request: object, principal: object) -> None:
        raise RuntimeError("boom")


class BrokenPolicy:
    def __init__(self) -> None:
        working = compile_policy(DEMO_POLICIES, SystemClock())
        self.current = replace(working, engine=BrokenEngine())
        self.shadow = None


class StalledAuthenticator:
    """An authenticator that never answers, like one waiting on a hung IdP."""

    ready = True

    async def authenticate(self, headers: object) -> None:
        await asyncio.Event().wait()


async def started_pipeline(certs: DevCerts, policy: object | None = None) -> tuple[Pipeline, MemorySink]:
    authenticator = Authenticator(authentication(certs), SystemClock())
    await authenticator.start()
    sink = MemorySink()
    pipeline = Pipeline(authenticator, policy or PolicyStore(DEMO_POLICIES, SystemClock()),
                        Responder(authentication(certs).forward), sink, "test/0")
    return pipeline, sink


async def test_allowed_check_runs_every_phase_and_is_audited(certs: DevCerts) -> None:
    """A reader token on /api is allowed with identity headers and produces exactly one allow event."""
    pipeline, sink = await started_pipeline(certs)
    token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    response = await pipeline.check(check_request("/api/orders?page=2", headers={"authorization": f"Bearer {token}"}))
    assert response.status.code == code_pb2.OK
    assert [e["decision"] for e in sink.events] == ["allow"]
    event = sink.events[0]
    assert (event["subject"], event["rule"], event["path"]) == ("alice", "demo/api/readers-may-read", "/api/orders")
    assert token not in str(event)


async def test_internal_error_fails_closed_with_its_own_reason(certs: DevCerts) -> None:
    """An exception inside a phase becomes a 500 deny `internal_error`, never an unhandled RPC error."""
    pipeline, sink = await started_pipeline(certs, BrokenPolicy())
    response = await pipeline.check(check_request("/api/orders"))
    assert response.denied_response.status.code == 500
    assert '"reason":"internal_error"' in response.denied_response.body
    assert [(e["decision"], e["reason"]) for e in sink.events] == [("deny", "internal_error")]


async def test_cancelled_check_is_still_audited(certs: DevCerts) -> None:
    """When Envoy gives up and the RPC is cancelled, the audit trail still records the attempt."""
    sink = MemorySink()
    pipeline = Pipeline(StalledAuthenticator(), PolicyStore(DEMO_POLICIES, SystemClock()),
                        Responder(authentication(certs).forward), sink, "test/0")
    task = asyncio.create_task(pipeline.check(check_request("/api/orders", request_id="slow-1")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(e["request_id"], e["reason"]) for e in sink.events] == [("slow-1", "check_cancelled")]


async def test_not_ready_answers_503(certs: DevCerts) -> None:
    """Before keys are loaded every Check is a 503 `not_ready`, not a 401 that would blame the client."""
    unstarted = Authenticator(AuthenticationConfig.model_validate({"providers": [
        {"name": "idp", "issuer": "https://idp", "audiences": ["a"], "jwks": {"url": "https://idp/jwks"}}]}),
        SystemClock())
    sink = MemorySink()
    pipeline = Pipeline(unstarted, PolicyStore(DEMO_POLICIES, SystemClock()),
                        Responder(authentication(certs).forward), sink, "t")
    response = await pipeline.check(check_request("/public/x"))
    assert response.denied_response.status.code == 503
    assert sink.events[0]["reason"] == "not_ready"


async def test_a_failing_shadow_policy_never_changes_the_live_answer(certs: DevCerts) -> None:
    """If evaluating the shadow policy raises, the live decision stands and the shadow records internal_error."""
    pipeline, sink = await started_pipeline(certs, BrokenShadow())
    response = await pipeline.check(check_request("/public/x"))
    assert response.HasField("ok_response")
    event = sink.events[0]
    assert (event["decision"], event["shadow_decision"], event["shadow_reason"]) == ("allow", "deny", "internal_error")


class BrokenShadow:
    def __init__(self) -> None:
        working = compile_policy(DEMO_POLICIES, SystemClock())
        self.current = working
        self.shadow = replace(working, engine=BrokenEngine())
