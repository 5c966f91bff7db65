"""`RateLimiter`: results, counters, failure modes against a Redis that is killed or hung, the breaker, batching."""

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from extauth.clock import ManualClock
from extauth.devstack.redis import RedisServer
from extauth.ratelimit import BreakerState, CircuitBreaker, Limit, LimitCheck, MemoryStorage, RateLimiter, StorageError
from extauth.ratelimit.model import LimitOutcome
from extauth.ratelimit.redis import RedisStorage

pytestmark = pytest.mark.redis

PER_MINUTE = Limit(2, 60)


class CountingStorage:
    """Passes through to a real storage and counts the calls that reach it."""

    def __init__(self, inner: RedisStorage) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    async def acquire(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        self.calls += 1
        return await self.inner.acquire(checks, now_ms)

    async def acquire_many(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[list[LimitOutcome]]:
        self.calls += 1
        return await self.inner.acquire_many(requests, now_ms)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill, pause and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def backend(own_redis: RedisServer) -> AsyncIterator[CountingStorage]:
    storage = CountingStorage(RedisStorage.from_url(own_redis.url, timeout_ms=2000))
    yield storage
    await storage.close()


def limiter_on(storage, clock: ManualClock, threshold: int = 3, **options) -> RateLimiter:
    return RateLimiter(storage, clock, breaker=CircuitBreaker(clock, failure_threshold=threshold, cooldown_seconds=5),
                       **options)


def check(key: str, mode: str = "closed", limit: Limit = PER_MINUTE, shadow: bool = False) -> LimitCheck:
    return LimitCheck(key, limit, failure_mode=mode, shadow=shadow)  # type: ignore[arg-type]


async def test_the_embedded_backend_needs_no_redis(key):
    """With the in-process storage the limiter enforces limits and counts requests and rejections."""
    limiter = RateLimiter(MemoryStorage(), ManualClock())
    results = [await limiter.check([check(key)]) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert (limiter.stats.requests, limiter.stats.rejections, limiter.stats.backend_calls) == (3, 1, 0)
    assert not results[2].degraded and not results[2].unavailable


async def test_a_request_without_limits_is_allowed_and_not_counted():
    """No checks: allowed, nothing counted, no backend call."""
    limiter = RateLimiter(MemoryStorage(), ManualClock())
    result = await limiter.check([])
    assert result.allowed and result.most_restrictive is None
    assert limiter.stats.requests == 0


async def test_the_most_restrictive_outcome_is_the_one_for_headers(key):
    """Allowed: the limit with least room left; rejected: the rejection with the longest wait."""
    limiter = RateLimiter(MemoryStorage(), ManualClock())
    burst, quota = check(key, limit=Limit(2, 10)), check(key, limit=Limit(100, 86_400))
    first = await limiter.check([quota, burst])
    assert first.most_restrictive is not None and first.most_restrictive.limit == Limit(2, 10)
    await limiter.check([quota, burst])
    third = await limiter.check([quota, burst])
    assert not third.allowed and third.most_restrictive.limit == Limit(2, 10)
    assert third.retry_after_seconds == 5.0


async def test_shadow_rejections_are_reported_and_counted_but_not_enforced(key):
    """A shadow limit that would reject leaves the request allowed and shows up in result and counters."""
    limiter = RateLimiter(MemoryStorage(), ManualClock())
    results = [await limiter.check([check(key, limit=Limit(10, 60)), check(key, shadow=True)]) for _ in range(4)]
    assert all(r.allowed for r in results)
    assert [len(r.shadow_rejections) for r in results] == [0, 0, 1, 1]
    assert (limiter.stats.shadow_rejections, limiter.stats.rejections) == (2, 0)


async def test_a_killed_redis_answers_each_check_by_its_failure_mode(own_redis, backend, key):
    """Redis gone: `open` allows, `closed` rejects as unavailable, `local` enforces an in-process bucket."""
    limiter = limiter_on(backend, ManualClock(), threshold=100)
    assert (await limiter.check([check(key)])).allowed and not limiter.degraded
    own_redis.kill()

    opened = await limiter.check([check(key, "open")])
    assert opened.allowed and opened.degraded

    closed = await limiter.check([check(key, "closed")])
    assert not closed.allowed and closed.degraded and closed.unavailable
    assert closed.retry_after_seconds > 0

    local = [await limiter.check([check(key, "local")]) for _ in range(3)]
    assert [r.allowed for r in local] == [True, True, False]
    assert all(r.degraded for r in local) and not local[2].unavailable
    assert limiter.stats.backend_errors == 5 and limiter.stats.degraded == 5
    assert "redis" in (limiter.last_error or "")


async def test_a_closed_check_keeps_the_local_buckets_of_its_request_untouched(own_redis, backend, key):
    """All-or-nothing holds in the degraded path: a request rejected as unavailable takes no local unit."""
    limiter = limiter_on(backend, ManualClock(), threshold=100)
    own_redis.kill()
    rejected = await limiter.check([check(key, "local"), check(key + "/x", "closed")])
    assert not rejected.allowed and rejected.unavailable
    assert (await limiter.check([check(key, "local")])).outcomes[0].remaining == 1


async def test_the_breaker_stops_calling_a_dead_redis(own_redis, backend, key):
    """After 3 failures the backend is no longer called: the next requests are answered without a round trip."""
    limiter = limiter_on(backend, ManualClock(), threshold=3)
    own_redis.kill()
    results = [await limiter.check([check(key, "open")]) for _ in range(10)]
    assert all(r.allowed and r.degraded for r in results)
    assert backend.calls == 3
    assert (limiter.stats.backend_errors, limiter.stats.short_circuited) == (3, 7)
    assert limiter.breaker_state is BreakerState.OPEN and limiter.degraded


async def test_it_recovers_by_itself_once_redis_is_back(own_redis, backend, key):
    """After a restart the first probe past the cool-down closes the breaker and Redis answers again."""
    clock = ManualClock()
    limiter = limiter_on(backend, clock, threshold=1)
    own_redis.kill()
    await limiter.check([check(key)])
    await asyncio.to_thread(own_redis.restart)
    assert (await limiter.check([check(key)])).unavailable  # still cooling down: not called
    assert backend.calls == 1
    clock.advance(5)
    recovered = await limiter.check([check(key)])
    assert recovered.allowed and not recovered.degraded
    assert limiter.breaker_state is BreakerState.CLOSED and backend.calls == 2
    assert [(await limiter.check([check(key)])).allowed for _ in range(2)] == [True, False]


async def test_a_hung_redis_costs_the_timeout_then_nothing(own_redis, backend, key):
    """A Redis that accepts but never answers: each call ends at the limiter timeout, then the breaker opens."""
    limiter = limiter_on(backend, ManualClock(), threshold=3, timeout_ms=50)
    assert (await limiter.check([check(key, "open")])).allowed
    own_redis.pause()
    try:
        results = [await limiter.check([check(key, "closed")]) for _ in range(6)]
    finally:
        own_redis.resume()
    assert all(r.unavailable for r in results)
    assert (limiter.stats.timeouts, limiter.stats.short_circuited) == (3, 3)
    assert backend.calls == 4


async def test_state_changes_are_logged_once_not_per_request(own_redis, backend, key):
    """One warning when Redis goes, one info when it is back, however many requests pass meanwhile."""
    clock = ManualClock()
    limiter = limiter_on(backend, clock, threshold=2)
    with capture_logs() as logs:
        own_redis.kill()
        for _ in range(20):
            await limiter.check([check(key, "open")])
        await asyncio.to_thread(own_redis.restart)
        clock.advance(5)
        for _ in range(5):
            await limiter.check([check(key, "open")])
    events = [entry["event"] for entry in logs]
    assert events == ["ratelimit_backend_degraded", "ratelimit_backend_recovered"]
    assert logs[0]["log_level"] == "warning" and "redis" in logs[0]["error"]


async def test_batching_sends_concurrent_checks_in_one_round_trip(redis_server, key):
    """40 concurrent requests in one event-loop turn: one backend call, and exactly the limit admitted."""
    storage = CountingStorage(RedisStorage.from_url(redis_server.url, timeout_ms=2000))
    limiter = limiter_on(storage, ManualClock(), batch_window_us=0)
    try:
        results = await asyncio.gather(*(limiter.check([check(key, limit=Limit(10, 60))]) for _ in range(40)))
    finally:
        await storage.close()
    assert sum(r.allowed for r in results) == 10
    assert storage.calls == 1 and limiter.stats.batches == 1


class HeldStorage(CountingStorage):
    """A real storage whose first call waits for `release`: the test decides how long a call stays out."""

    def __init__(self, inner: RedisStorage) -> None:
        super().__init__(inner)
        self.release = asyncio.Event()
        self.first_out = asyncio.Event()

    async def acquire_many(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[list[LimitOutcome]]:
        self.calls += 1
        if self.calls == 1:
            self.first_out.set()
            await self.release.wait()
        return await self.inner.acquire_many(requests, now_ms)


@pytest.mark.parametrize(("waiting", "max_batch", "calls"), [(40, 256, 2), (300, 256, 3), (5, 2, 4)])
async def test_checks_arriving_while_a_call_is_out_leave_together_when_it_answers(redis_server, key, waiting,
                                                                                   max_batch, calls):
    """One call out at a time: whatever arrives meanwhile goes in the next call(s) of at most `max_batch`."""
    storage = HeldStorage(RedisStorage.from_url(redis_server.url, timeout_ms=2000))
    # The limiter's own deadline (50 ms by default) must not expire while the test holds the call: batching is
    # what this test is about, and a slow moment of the machine would otherwise time the first Check out.
    limiter = limiter_on(storage, ManualClock(), batch_window_us=0, max_batch=max_batch, timeout_ms=5000)
    limit = Limit(10, 60)
    try:
        first = asyncio.ensure_future(limiter.check([check(key, limit=limit)]))
        await storage.first_out.wait()
        rest = [asyncio.ensure_future(limiter.check([check(key, limit=limit)])) for _ in range(waiting)]
        for _ in range(3):  # event-loop turns, not time: each turn runs every new Check up to its submit
            await asyncio.sleep(0)
        assert storage.calls == 1  # the others wait for the call that is out
        storage.release.set()
        results = await asyncio.gather(first, *rest)
    finally:
        await storage.close()
    assert sum(r.allowed for r in results) == min(10, 1 + waiting)
    assert storage.calls == calls and limiter.stats.batches == calls


@pytest.mark.parametrize("waiting", [0, 1, 7])
async def test_checks_behind_a_call_that_does_not_answer_each_time_out_by_their_failure_mode(redis_server, key,
                                                                                           waiting):
    """A call out that hangs: the Check in it and every Check that arrived meanwhile are answered by their failure
    modes after the timeout, without another call; once the call answers, the next Check gets the store's count."""
    storage = HeldStorage(RedisStorage.from_url(redis_server.url, timeout_ms=2000))
    limiter = limiter_on(storage, ManualClock(), threshold=100, batch_window_us=0, timeout_ms=30)
    try:
        first = asyncio.ensure_future(limiter.check([check(key, "open")]))
        await storage.first_out.wait()
        modes = ["closed" if index % 2 else "open" for index in range(waiting)]
        rest = [asyncio.ensure_future(limiter.check([check(key, mode)])) for mode in modes]
        # The held call is not released meanwhile (the 10 s only turns a Check left waiting into a failure).
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        assert [result.allowed for result in results] == [True] + [mode == "open" for mode in modes]
        assert all(result.degraded for result in results)
        assert limiter.stats.timeouts == 1 + waiting and storage.calls == 1
        storage.release.set()
        answered = await limiter.check([check(key, limit=Limit(10, 60))])
    finally:
        await storage.close()
    assert answered.allowed and not answered.degraded and answered.outcomes[0].remaining == 9


async def test_a_batch_against_a_dead_redis_degrades_every_request(own_redis, backend, key):
    """The batch fails once; every request in it is answered by its own failure mode."""
    limiter = limiter_on(backend, ManualClock(), threshold=100, batch_window_us=200)
    own_redis.kill()
    results = await asyncio.gather(*(limiter.check([check(f"{key}/{i}", "open" if i % 2 else "closed")])
                                     for i in range(10)))
    assert [r.allowed for r in results] == [False, True] * 5
    assert all(r.degraded for r in results) and backend.calls == 1


async def test_storage_errors_raised_by_a_batch_are_storage_errors(own_redis, backend, key):
    """The batcher hands each waiting request a `StorageError`, never a raw redis-py exception."""
    own_redis.kill()
    with pytest.raises(StorageError):
        await backend.acquire_many([[check(key)]], 0)
