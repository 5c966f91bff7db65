"""Queued mode through real Envoy and Redis: a burst over a queued limit waits instead of getting 429s, and a
waiter Envoy gives up on leaves its place to the next request."""

import http.client
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from extauth.devstack.envoy import Node, connection_managers
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, forward_every_path
from extauth.devstack.redis import RedisServer
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

pytestmark = [pytest.mark.integration, pytest.mark.redis]

QUEUED = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: queued}
roles: {member: []}
routes:
  - name: warm
    match: {path: {prefix: /warm}}
    rules: [{name: members, when: {roles: [member]}}]
  - name: burst
    match: {path: {prefix: /burst}}
    rules: [{name: members, when: {roles: [member]}}]
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 5, per: 1s}], on_limit: queue, max_wait: MAX_WAIT}
"""


def ext_authz_timeout(seconds: float) -> Callable[[Node], None]:
    """Forward every path, and give Envoy's ext_authz call this timeout."""
    def edit(bootstrap: Node) -> None:
        forward_every_path(bootstrap)
        for listener in bootstrap["static_resources"]["listeners"]:
            for manager in connection_managers(listener):
                for http_filter in manager["http_filters"]:
                    if http_filter["name"] == "envoy.filters.http.ext_authz":
                        http_filter["typed_config"]["grpc_service"]["timeout"] = f"{seconds}s"
    return edit


def burst(envoy: EnvoyProcess, certs: DevCerts, path: str, token: str, count: int) -> list[int]:
    """`count` requests on connections opened (TLS done) beforehand and released together: their statuses."""
    tls = ssl.create_default_context(cafile=str(certs.ca_cert))
    connections = [http.client.HTTPSConnection("localhost", envoy.port, context=tls, timeout=10) for _ in range(count)]
    for connection in connections:
        connection.connect()
    start = threading.Barrier(count)
    statuses: list[int] = []

    def send(connection: http.client.HTTPSConnection) -> None:
        start.wait()
        connection.request("GET", path, headers={"authorization": f"Bearer {token}"})
        reply = connection.getresponse()
        reply.read()
        statuses.append(reply.status)
        connection.close()

    threads = [threading.Thread(target=send, args=(connection,)) for connection in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def queued_gateway(tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, redis_server: RedisServer,
                   max_wait: str, envoy_timeout_seconds: float) -> tuple[EnvoyProcess, ExtauthProcess, str]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "queued.yaml").write_text(QUEUED.replace("MAX_WAIT", max_wait))
    config = extauth_config(tmp_path / "extauth", certs, policy={"path": str(policies)},
                            rate_limit={"backend": redis_server.url, "timeout_ms": 1000})
    extauth = ExtauthProcess(tmp_path / "extauth", config)
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses,
                         edit=ext_authz_timeout(envoy_timeout_seconds))
    token = mint_token(certs.jwt_signing_key, subject=f"user-{uuid.uuid4().hex}", claims={"roles": ["member"]})
    assert envoy.get("/warm", token).status == 200  # the token is verified once, before the burst
    return envoy, extauth, token


@pytest.mark.parametrize("max_wait,statuses", [("2s", {200: 10}), ("100ms", {200: 5, 429: 5})])
def test_a_burst_over_a_queued_limit_waits_within_max_wait(
        tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, envoy_binary: Path, redis_server: RedisServer,
        max_wait: str, statuses: dict[int, int]) -> None:
    """10 requests at once on 5 per second: with max_wait 2s all 10 pass (the last waits 1 s); with 100ms the
    5 over the limit would wait 200 ms or more, so they get their 429 at once. Waits are audited."""
    envoy, extauth, token = queued_gateway(tmp_path, certs, upstream, redis_server, max_wait, 3.0)
    try:
        assert Counter(burst(envoy, certs, "/burst", token, 10)) == statuses
        events = [event for event in extauth.audit_events() if event["path"] == "/burst"]
        waited = [event["rate_limit"].get("waited_seconds", 0) for event in events if event["decision"] == "allow"]
        assert sum(wait > 0 for wait in waited) == statuses[200] - 5
        assert all(wait <= 1.0 for wait in waited)
    finally:
        envoy.stop()
        extauth.stop()


def test_waiters_envoy_gives_up_on_release_their_places(
        tmp_path: Path, certs: DevCerts, upstream: RunningUpstream, envoy_binary: Path,
        redis_server: RedisServer) -> None:
    """Envoy's timeout (the shipped 500 ms) is shorter than the waits (up to 1 s): the waiters it cancels are
    audited as cancelled and give back their reserved units, so a request right after the burst waits for none
    of them (without the release it would wait some 700 ms, past Envoy's timeout)."""
    envoy, extauth, token = queued_gateway(tmp_path, certs, upstream, redis_server, "2s", 0.5)
    try:
        statuses = Counter(burst(envoy, certs, "/burst", token, 10))
        assert statuses[200] >= 5 and statuses[200] + statuses[503] == 10 and statuses[503] >= 3
        assert envoy.get("/burst", token).status == 200
        events = [event for event in extauth.audit_events() if event["path"] == "/burst"]
        assert Counter(event["reason"] for event in events)["check_cancelled"] == statuses[503]
    finally:
        envoy.stop()
        extauth.stop()
