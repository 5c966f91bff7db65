"""One bad request in a batch window cannot disable limits for the others (real Redis, standalone and Cluster)."""

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.devstack.redis import RedisCluster
from extauth.ratelimit import CircuitBreaker, Limit, LimitCheck, RateLimiter, StorageError
from extauth.ratelimit.model import MAX_KEY_BYTES
from extauth.ratelimit.phase import RateLimitPhase
from extauth.ratelimit.redis import RedisStorage
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal
from tests.unit.ratelimit.conftest import open_backend

pytestmark = pytest.mark.redis

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: poison}
roles: {reader: []}
routes:
  - name: api
    match: {path: {prefix: /api}}
    rules:
      - {name: readers, when: {roles: [reader]}}
    limits:
      - {name: per-subject, key: [subject, claim:tenant, header:x-api-key], windows: [{requests: 3, per: 1h}],
         failure_mode: closed}
"""

#: Values a client (or a token it controls) can put into a key part: JSON claims may carry lone surrogates
#: and NULs (`"\ud800"`, `"\u0000"`); headers reach us as valid UTF-8 (protobuf strings) but may hold controls.
POISONS = {
    "lone surrogate subject": {"subject": "eve\ud800"},
    "lone surrogate claim": {"tenant": "\udcff{x}|sub=alice"},
    "nul in a claim": {"tenant": "acme\x00evil"},
    "1 MB claim": {"tenant": "x" * 1_000_000},
    "control characters and braces in a header": {"x-api-key": "k\x01\x7f{tag}|" + "y" * 100_000},
}


@pytest.fixture
def policy(tmp_path: Path):
    (tmp_path / "poison.yaml").write_text(POLICY)
    return compile_policy(tmp_path, ManualClock(1_000_000))


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
async def test_a_poison_value_in_a_batch_leaves_every_other_request_counted(request, backend, poison, policy,
                                                                             key) -> None:
    """Concurrent checks in one batch window, one with a poison key part: the others are counted exactly (the
    4th of each is a 429), the poison one gets an answer of its own, and the breaker stays closed."""
    storage = await open_backend(request, backend)
    clock = ManualClock(1_000_000)
    limiter = RateLimiter(storage, clock, timeout_ms=2000, batch_window_us=0,
                          breaker=CircuitBreaker(clock, failure_threshold=1, cooldown_seconds=60))
    phase = RateLimitPhase(limiter)
    tenant = key.partition("|")[0].replace("/", "-")  # unique per test: the servers are shared by the session

    async def one(subject: str, tenant: str, api_key: str) -> int:
        who = principal(subject, ["reader"], claims={"tenant": tenant})
        req = Request(check_request("/api/x", headers={"x-api-key": api_key}))
        decision = policy.engine.authorize(req, who)
        return (await phase.apply(policy.limits, req, decision)).status

    honest = [("alice", tenant, "k1"), ("bob", tenant, "k2"), ("carol", tenant, "k3")]
    poisoned = {"subject": "eve", "tenant": tenant, "x-api-key": "k4"} | poison
    try:
        for _ in range(3):
            statuses = await asyncio.gather(*(one(*who) for who in honest),
                                            one(poisoned["subject"], poisoned["tenant"], poisoned["x-api-key"]))
            assert statuses == [200, 200, 200, 200]
        statuses = await asyncio.gather(*(one(*who) for who in honest),
                                        one(poisoned["subject"], poisoned["tenant"], poisoned["x-api-key"]))
        assert statuses == [429, 429, 429, 429]  # the poison value got a proper key, counted like any other
        assert limiter.stats.batches == 4  # each round was one batch: the poison shared it with the others
        assert limiter.stats.degraded == 0 and limiter.stats.backend_errors == 0
        assert limiter.breaker_state.value == "closed"
    finally:
        await storage.close()


async def test_a_key_the_script_cannot_read_fails_only_its_own_request(redis_storage, key) -> None:
    """A key holding another Redis type makes the script's GET fail for that key alone: its requests answer by
    their failure modes (`closed` 503, `open` allowed), the others in the same batch are counted exactly, and the
    breaker stays closed. (One hash tag: on a Cluster too they all go to one script call.)"""
    clock = ManualClock(1_000_000)
    limiter = RateLimiter(redis_storage, clock, timeout_ms=2000, batch_window_us=0,
                          breaker=CircuitBreaker(clock, failure_threshold=1, cooldown_seconds=60))
    honest = [LimitCheck(f"{{{key}}}-{n}", Limit(2, 3600)) for n in range(3)]
    broken = LimitCheck(f"{{{key}}}-broken", Limit(2, 3600), failure_mode="closed")
    forgiving = LimitCheck(f"{{{key}}}-broken", Limit(2, 3600), failure_mode="open")
    await redis_storage.client.hset(broken.storage_key, "not", "a string")
    rounds = []
    for _ in range(3):
        rounds.append(await asyncio.gather(*(limiter.check([check]) for check in honest),
                                           limiter.check([honest[0], broken]), limiter.check([forgiving])))
    assert [[result.allowed for result in results[:3]] for results in rounds] == [[True] * 3, [True] * 3, [False] * 3]
    assert all(results[3].unavailable and results[3].degraded for results in rounds)
    assert all(results[4].allowed and results[4].degraded for results in rounds)
    assert (limiter.stats.check_errors, limiter.stats.backend_errors, limiter.stats.batches) == (6, 0, 3)
    assert limiter.breaker_state.value == "closed"


@pytest.mark.parametrize("bad", ["\ud800", "\udcff\x00", "k" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2 + 1)],
                         ids=["lone surrogate", "low surrogate and NUL", "too long", "too long in UTF-8"])
def test_a_key_that_cannot_be_sent_is_refused_before_any_batch(bad: str) -> None:
    """The engine refuses a key that is not valid UTF-8 or longer than MAX_KEY_BYTES when the check is built."""
    with pytest.raises(ValueError, match="valid UTF-8"):
        LimitCheck(f"api|sub={bad}", Limit(1, 1))


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A Cluster of this test's own, one of whose nodes it hangs."""
    cluster = RedisCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


async def test_a_hung_cluster_node_fails_only_the_requests_with_checks_in_its_slots(own_cluster, key) -> None:
    """One call per slot: while one node hangs (SIGSTOP), requests with a check in its slots fail alone, the
    requests of the other slots in the same batch get their answers."""
    storage = RedisStorage.from_url(own_cluster.url, timeout_ms=300, connect_timeout_ms=2000)
    try:
        await storage.client.initialize()
        by_port: dict[int, LimitCheck] = {}
        for n in itertools.count():
            check = LimitCheck(f"{key}-{n}", Limit(5, 60))
            by_port.setdefault(storage.client.get_node_from_key(check.storage_key).port, check)
            if len(by_port) == len(own_cluster.servers):
                break
        hung = own_cluster.servers[0]
        others = [check for port, check in by_port.items() if port != hung.port]
        await storage.acquire_many([[check] for check in by_port.values()], 0)  # the script is loaded everywhere
        hung.pause()
        try:
            answers = await storage.acquire_many([[by_port[hung.port]], *([check] for check in others)], 0)
        finally:
            hung.resume()
        assert isinstance(answers[0], StorageError)
        assert [[outcome.allowed for outcome in answer] for answer in answers[1:]] == [[True]] * len(others)
    finally:
        await storage.close()
