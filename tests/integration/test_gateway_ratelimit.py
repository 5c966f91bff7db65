"""Rate limits on a running gateway: 429 through real Envoy, and exact counts across extauth processes sharing Redis."""

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauth.config.schema import ListenAddress
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devstack.redis import RedisCluster, RedisServer
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream
from extauth.tools.synthetic import check_request

QUOTA = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: quota}
roles: {member: []}
routes:
  - name: hot
    match: {path: {prefix: /hot}}
    rules:
      - {name: members, when: {roles: [member]}}
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 20, per: 1h}], failure_mode: closed}
"""


def test_over_limit_client_gets_429_with_retry_after_through_envoy(
        tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, envoy_binary: Path,
        redis_server: RedisServer) -> None:
    """/api/limited (5 per 10 s per subject, counted in Redis): five 200s carrying RateLimit, then a 429."""
    config = extauth_config(tmp_path / "extauth", certs, rate_limit={"backend": redis_server.url})
    extauth = ExtauthProcess(tmp_path / "extauth", config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    try:
        token = mint_token(certs.jwt_signing_key, subject=f"user-{uuid.uuid4().hex}", claims={"roles": ["reader"]})
        for remaining in range(4, -1, -1):
            response = envoy.get("/api/limited", token)
            assert response.status == 200
            assert response.headers["ratelimit"].endswith(f";r={remaining};t={2 * (5 - remaining)}")
            assert response.headers["ratelimit-policy"] == '"per-subject/5per10s";q=5;w=10'
        limited = envoy.get("/api/limited", token)
        assert limited.status == 429 and limited.json()["reason"] == "rate_limited"
        assert limited.headers["retry-after"] == "2"
        assert b"demo-upstream" not in limited.body
        deadline = time.monotonic() + 10
        while not (limited_events := [e for e in extauth.audit_events() if e.get("reason") == "rate_limited"]):
            assert time.monotonic() < deadline, "no rate_limited audit event"
            time.sleep(0.05)
        assert limited_events[0]["rate_limit"]["remaining"] == 0
    finally:
        envoy.stop()
        extauth.stop()


async def _hammer(addresses: list[ListenAddress], token: str, requests: int) -> int:
    """Concurrent Checks spread over every worker's socket; returns how many were allowed."""
    channels = [grpc.aio.insecure_channel(address.grpc_target()) for address in addresses]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(channel) for channel in channels]
        check = check_request("/hot/x", headers={"authorization": f"Bearer {token}"})
        replies = await asyncio.gather(*(stubs[i % len(stubs)].Check(check, timeout=10) for i in range(requests)))
        return sum(reply.HasField("ok_response") for reply in replies)
    finally:
        for channel in channels:
            await channel.close()


@pytest.mark.parametrize("store", ["redis_server", "redis_cluster"])
def test_two_extauth_processes_admit_exactly_the_limit(
        tmp_path: Path, certs: DevCerts, store: str, request: pytest.FixtureRequest) -> None:
    """Two workers sharing Redis (standalone or Cluster) admit exactly 20 of 200 concurrent Checks on one key."""
    backend: RedisServer | RedisCluster = request.getfixturevalue(store)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quota.yaml").write_text(QUOTA)
    # A generous store timeout: this test is about exact counts, not about timeouts on a loaded 2-core machine.
    config = extauth_config(tmp_path, certs, policy={"path": str(policies)},
                            rate_limit={"backend": backend.url, "timeout_ms": 1000})
    extauth = ExtauthProcess(tmp_path, config, "--workers", "2")
    try:
        workers = [extauth.addresses[0].for_worker(index, 2) for index in range(2)]
        for worker in workers:
            extauth.wait_serving(worker)
        token = mint_token(certs.jwt_signing_key, subject=f"user-{uuid.uuid4().hex}", claims={"roles": ["member"]})
        assert asyncio.run(_hammer(workers, token, 200)) == 20
    finally:
        assert extauth.stop() == 0


@pytest.mark.parametrize("store", ["redis_server", "redis_cluster"])
def test_a_poison_claim_in_the_same_batches_leaves_other_callers_counted_exactly(
        tmp_path: Path, certs: DevCerts, store: str, request: pytest.FixtureRequest) -> None:
    """A token whose `tenant` claim holds a lone surrogate, a NUL and key syntax (valid JSON: `"\\ud800\\u0000"`),
    checked concurrently with an honest one through a batching extauth: each gets exactly its own 20, and none
    fails the batch for the other (before: one UnicodeEncodeError answered the whole batch with 503s)."""
    backend: RedisServer | RedisCluster = request.getfixturevalue(store)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quota.yaml").write_text(QUOTA.replace("key: [subject]", "key: [subject, claim:tenant]"))
    config = extauth_config(tmp_path, certs, policy={"path": str(policies)},
                            rate_limit={"backend": backend.url, "timeout_ms": 1000, "batch_window_us": 1000})
    extauth = ExtauthProcess(tmp_path, config)
    try:
        extauth.wait_serving()
        tokens = [mint_token(certs.jwt_signing_key, subject=f"user-{uuid.uuid4().hex}",
                             claims={"roles": ["member"], "tenant": tenant})
                  for tenant in ("acme", "\ud800\x00{x}|subject=alice")]
        assert asyncio.run(_hammer_each(extauth.addresses, tokens, 60)) == [20, 20]
    finally:
        assert extauth.stop() == 0


async def _hammer_each(addresses: list[ListenAddress], tokens: list[str], requests: int) -> list[int]:
    """`requests` concurrent Checks per token, interleaved; returns how many of each token's were allowed."""
    channel = grpc.aio.insecure_channel(addresses[0].grpc_target())
    try:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        checks = [check_request("/hot/x", headers={"authorization": f"Bearer {token}"}) for token in tokens]
        replies = await asyncio.gather(*(stub.Check(checks[i % len(checks)], timeout=10)
                                         for i in range(requests * len(checks))))
        return [sum(reply.HasField("ok_response") for reply in replies[n::len(checks)]) for n in range(len(checks))]
    finally:
        await channel.close()
