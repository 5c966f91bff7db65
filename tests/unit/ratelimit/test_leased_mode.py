"""Leased mode: the lease script and its Python twin, K's adaptation, the over-admission bound, the limiter hook."""

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.devstack.redis import RedisCluster, RedisServer
from extauth.ratelimit import Limit, LimitCheck, RateLimiter
from extauth.ratelimit.gcra import State
from extauth.ratelimit.lease import LEASE_SHARE, Grant, LeaseBook, RedisLeaseSource, grant
from extauth.ratelimit.redis import RedisStorage
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

pytestmark = pytest.mark.redis


class BucketSource:
    """Leases from in-process buckets through `grant` (the twin of `lua/lease.lua`), counting the calls."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[State, int]] = {}  # key -> (state, expires_ms)
        self.calls = 0

    async def fetch(self, wants: Sequence[tuple[LimitCheck, int]], now_ms: int) -> list[Grant]:
        self.calls += 1
        grants = []
        for check, want in wants:
            entry = self.buckets.get(check.storage_key)
            state = entry[0] if entry is not None and entry[1] > now_ms else None
            new_state, ttl, answer = grant(state, now_ms, check.limit.limit, check.limit.period_ms, want, check.cost)
            if new_state is not None:
                self.buckets[check.storage_key] = (new_state, now_ms + ttl)
            grants.append(answer)
        return grants


def leased(limit: int, period_seconds: float, cost: int = 1, key: str | None = None) -> LimitCheck:
    return LimitCheck(key or f"lease/{uuid.uuid4().hex[:8]}|sub=alice", Limit(limit, period_seconds), cost,
                      mode="leased")


async def admit(book: LeaseBook, source: BucketSource, check: LimitCheck, now_ms: int) -> bool:
    taken = await book.take([check], now_ms, source.fetch)
    return bool(taken.outcomes[0] and taken.outcomes[0].allowed)


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 40), st.integers(1, 3)), min_size=1, max_size=12),
       limit=st.integers(1, 50), period_ms=st.sampled_from([999, 1000, 60_000]))
def test_lease_script_grants_what_its_python_twin_grants(request: pytest.FixtureRequest, backend: str,
                                                         steps: list[tuple[int, int, int]], limit: int,
                                                         period_ms: int) -> None:
    """Over generated sequences of (time step, units wanted, cost of the asking request), the Lua script and
    `grant` answer identically (windows of at least 20 ms per unit: Redis expires keys on its own clock, which
    the steps do not move)."""
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if backend == "redis" else "redis_cluster")
    key = f"lease/{uuid.uuid4().hex[:8]}|sub=alice"

    async def run() -> None:
        storage = RedisStorage.from_url(server.url, timeout_ms=2000)
        source = RedisLeaseSource(storage)
        state: State | None = None
        now_ms = 1_700_000_000_000
        try:
            for step, want, cost in steps:
                now_ms += step
                check, want = leased(limit, period_ms / 1000, cost, key), max(want, cost)
                if state is not None and state[0] * limit + state[1] <= now_ms * limit:
                    state = None  # the key's TTL has run out in Redis too
                expected_state, _, expected = grant(state, now_ms, limit, period_ms, want, cost)
                assert (await source.fetch([(check, want)], now_ms)) == [expected]
                state = expected_state or state
        finally:
            await storage.close()

    asyncio.run(run())


def test_a_slow_key_takes_one_unit_per_call_as_exact_mode_does() -> None:
    """A key requested less often than once per lease lifetime gets K = 1: one store call per request."""
    book, source, check = LeaseBook(ttl_ms=100), BucketSource(), leased(1000, 1)
    for request in range(10):
        assert asyncio.run(admit(book, source, check, 1_000_000 + request * 150))
    assert source.calls == 10
    assert source.buckets[check.storage_key][0] == (1_000_000 + 9 * 150 + 1, 0)  # 10 units taken, none held


def test_a_busy_key_grows_its_lease_to_the_observed_rate_within_its_cap() -> None:
    """At 1 request per ms, K grows to the demand of one lease lifetime, capped by max_tokens and limit / 10."""
    book, source, check = LeaseBook(ttl_ms=100, max_tokens=64), BucketSource(), leased(10_000, 1)

    async def run() -> list[int]:
        sizes = []
        for now_ms in range(1000, 3000):
            sizes.append(book.size_for(check, now_ms))
            assert await admit(book, source, check, now_ms)
        return sizes

    sizes = asyncio.run(run())
    assert sizes[0] == 1 and max(sizes) == 64
    assert source.calls < 2000 / 32

    capped, small, small_source = LeaseBook(ttl_ms=100, max_tokens=1000), leased(50, 1), BucketSource()
    for now_ms in range(20):
        assert asyncio.run(admit(capped, small_source, small, now_ms))
    assert capped.size_for(small, 20) == 50 // LEASE_SHARE


def test_concurrent_checks_on_one_key_share_one_lease_fetch() -> None:
    """Checks that arrive while a lease is being fetched wait for it instead of fetching their own."""
    book, check = LeaseBook(ttl_ms=100), leased(1000, 1)
    source = BucketSource()

    async def run() -> list[bool]:
        await admit(book, source, check, 0)
        return await asyncio.gather(*(admit(book, source, check, 10) for _ in range(20)))

    assert all(asyncio.run(run()))
    assert source.calls <= 3


def test_units_go_back_to_the_lease_when_the_request_is_rejected_after_all() -> None:
    """`give_back` returns a rejected request's units to the lease it took them from."""
    book, source, check = LeaseBook(ttl_ms=100), BucketSource(), leased(1000, 1)

    async def run() -> int:
        await admit(book, source, check, 0)
        await admit(book, source, check, 1)  # a second lease, of several units
        taken = await book.take([check], 2, source.fetch)
        lease = taken.spent[0][1]
        before = lease.left
        book.give_back(taken)
        return lease.left - before

    assert asyncio.run(run()) == 1


def test_a_request_costing_more_than_the_bucket_holds_leases_nothing() -> None:
    """Cost 3 on 10 per day: after 3 requests 1 unit is left; the 4th is rejected and leaves that unit in Redis
    (a lease of fewer units than the cost would strand them)."""
    book, source, check = LeaseBook(ttl_ms=100), BucketSource(), leased(10, 86_400, cost=3)

    async def run() -> list[bool]:
        return [await admit(book, source, check, now_ms) for now_ms in range(4)]

    assert asyncio.run(run()) == [True, True, True, False]
    assert source.buckets[check.storage_key][0] == (9 * 8_640_000, 0)  # TAT after 9 units of 8640 s each


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 40)), min_size=1, max_size=400),
       limit=st.integers(10, 200), ttl_ms=st.integers(1, 300))
def test_two_processes_over_admit_at_most_their_leases_in_any_interval(arrivals: list[tuple[int, int]], limit: int,
                                                                       ttl_ms: int) -> None:
    """Two lease books on one bucket: in every interval, admissions stay within what exact GCRA allows there
    plus the units two outstanding leases can hold (2 x K), over generated arrival patterns."""
    period_ms = 1000
    source, books = BucketSource(), [LeaseBook(ttl_ms=ttl_ms, max_tokens=32), LeaseBook(ttl_ms=ttl_ms, max_tokens=32)]
    check = leased(limit, period_ms / 1000, key="bound|sub=x")
    cap = max(1, min(32, limit // LEASE_SHARE))

    async def run() -> list[int]:
        admitted, now_ms = [], 0
        for process, gap in arrivals:
            now_ms += gap
            if await admit(books[process], source, check, now_ms):
                admitted.append(now_ms)
        return admitted

    admitted = asyncio.run(run())
    for first, start in enumerate(admitted):
        for last in range(first, len(admitted)):
            length = admitted[last] - start
            exact_most = limit + length * limit // period_ms  # what GCRA itself admits in an interval this long
            assert last - first + 1 <= exact_most + 2 * cap


async def test_the_limiter_answers_leased_checks_from_its_lease_and_exact_ones_from_the_store(
        redis_storage: RedisStorage) -> None:
    """Through `RateLimiter` on real Redis: a busy leased key calls the store far less than once per request,
    and a bucket with no refill admits no more than its limit."""
    clock = ManualClock()
    limiter = RateLimiter(redis_storage, clock, timeout_ms=2000, leases=LeaseBook(ttl_ms=10_000, max_tokens=16))
    check = leased(200, 86_400)
    exact = LimitCheck(check.key.replace("lease/", "exact/"), Limit(1000, 86_400))
    admitted = 0
    for _ in range(300):
        admitted += (await limiter.check([check, exact])).allowed
        clock.advance(0.001)
    assert admitted == 200
    assert limiter.stats.lease_calls < 300 / 4
    assert limiter.stats.backend_calls == 200  # requests their lease rejected never reached the store


LEASED_POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: shop}
roles: {free: []}
routes:
  - name: search
    match: {path: {prefix: /search}}
    rules: [{name: members, when: {roles: [free]}}]
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 500, per: 1s}], mode: leased}
"""


def test_a_leased_limit_reaches_its_checks_and_explain_names_the_mode(tmp_path: Path) -> None:
    """`mode: leased` becomes `mode="leased"` on every window, and explain and change summaries show it."""
    (tmp_path / "shop.yaml").write_text(LEASED_POLICY)
    policy = compile_policy(tmp_path, ManualClock())
    request = Request(check_request("/search"))
    decision = policy.engine.authorize(request, principal("alice", ["free"]))
    assert [check.leased for check in policy.limits.checks_for(request, decision)] == [True]
    (applied,) = policy.limits.applicable(request, decision)
    assert "leased mode" in applied.describe() and applied.summary.endswith(", leased")


@pytest.mark.parametrize("failure_mode,allowed,unavailable", [("open", True, False), ("closed", False, True),
                                                               ("local", True, False)])
async def test_a_lease_the_store_cannot_give_is_answered_by_the_failure_mode(
        failure_mode: str, allowed: bool, unavailable: bool) -> None:
    """Redis refusing connections: a leased check is answered by its failure mode, degraded, and the failures
    count towards the breaker as exact calls do."""
    from extauth.devstack.redis import free_port
    from extauth.ratelimit import BreakerState, CircuitBreaker

    clock = ManualClock()
    storage = RedisStorage.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=500)
    limiter = RateLimiter(storage, clock, timeout_ms=500,
                          breaker=CircuitBreaker(clock, failure_threshold=2, cooldown_seconds=5))
    check = LimitCheck("down|sub=alice", Limit(100, 1), failure_mode=failure_mode, mode="leased")
    try:
        for _ in range(3):
            result = await limiter.check([check])
            assert (result.allowed, result.unavailable, result.degraded) == (allowed, unavailable, True)
        assert limiter.breaker_state is BreakerState.OPEN
        assert limiter.stats.lease_calls == 2 and limiter.stats.short_circuited == 1
    finally:
        await storage.close()


async def test_in_process_a_leased_limit_is_counted_exactly() -> None:
    """With the in-process store there is no round trip to save: every request is counted in the bucket itself."""
    from extauth.ratelimit import MemoryStorage

    storage = MemoryStorage()
    limiter = RateLimiter(storage, ManualClock())
    check = leased(3, 60)
    assert [(await limiter.check([check])).allowed for _ in range(5)] == [True, True, True, False, False]
    assert len(limiter.leases) == 0 and limiter.stats.lease_calls == 0
    assert storage.bucket(check.storage_key, int(ManualClock().now() * 1000)) is not None
