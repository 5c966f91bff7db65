"""Queued mode: the reserve and release scripts and their Python twins, exact waits on the injected clock, the
bound on waiters, and a cancelled waiter giving back its place and its units."""

import asyncio
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.config import ConfigError
from extauth.devstack.redis import RedisCluster, RedisServer
from extauth.ratelimit import Limit, LimitCheck, MemoryStorage, RateLimiter
from extauth.ratelimit.gcra import State
from extauth.ratelimit.queue import InProcessReservations, RedisReservations, Reservation, release, reserve
from extauth.ratelimit.redis import RedisStorage
from extauth.ratelimit.storage import StorageError

pytestmark = pytest.mark.redis

FIVE_PER_SECOND = Limit(5, 1)


def queued(key: str, max_wait_ms: int, limit: Limit = FIVE_PER_SECOND, cost: int = 1) -> LimitCheck:
    return LimitCheck(key, limit, cost, max_wait_ms=max_wait_ms)


class RecordingSleep:
    """Records each wait a queued Check asks for; time stands still (a burst that arrives at one instant)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class BlockingSleep:
    """Waits until released (or cancelled), so tests can hold Checks in the queue."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, seconds: float) -> None:
        self.waiting += 1
        await self.release.wait()


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 1500), st.integers(1, 3), st.integers(0, 3000), st.booleans()),
                      min_size=1, max_size=12),
       limit=st.integers(1, 20), period_ms=st.sampled_from([999, 1000, 60_000]))
def test_reserve_and_release_scripts_do_what_their_python_twins_do(request: pytest.FixtureRequest, backend: str,
                                                                    steps: list[tuple[int, int, int, bool]],
                                                                    limit: int, period_ms: int) -> None:
    """Over generated sequences of (time step, cost, tolerance, release it), Lua and Python agree on every
    reservation, so also on the state each one leaves (windows of at least 50 ms per unit: Redis expires keys on
    its own clock, which the generated steps do not move)."""
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if backend == "redis" else "redis_cluster")
    key = f"queue/{uuid.uuid4().hex[:8]}|sub=alice"

    async def run() -> None:
        storage = RedisStorage.from_url(server.url, timeout_ms=2000)
        reservations = RedisReservations(storage)
        state: State | None = None
        now_ms = 1_700_000_000_000
        try:
            for step, cost, tolerance, give_up in steps:
                now_ms += step
                check = queued(key, tolerance, Limit(limit, period_ms / 1000), cost)
                if state is not None and state[0] * limit + state[1] <= now_ms * limit:
                    state = None  # expired in Redis too
                expected, states = reserve([(check, tolerance)], now_ms, {check.storage_key: state})
                assert await reservations.reserve([(check, tolerance)], now_ms) == expected
                if expected.reserved:
                    state = states[check.storage_key][0]
                    if give_up:
                        await reservations.release([check], now_ms)
                        released = release(check, now_ms, state)
                        state = released[0] if released else None
        finally:
            await storage.close()

    asyncio.run(run())


@pytest.mark.parametrize("max_wait_ms,allowed,waits_ms", [
    (2000, 10, [0, 0, 0, 0, 0, 200, 400, 600, 800, 1000]),
    (100, 5, [0, 0, 0, 0, 0]),
    (200, 6, [0, 0, 0, 0, 0, 200]),
])
async def test_a_burst_waits_exactly_until_each_request_conforms_within_max_wait(
        storage, key: str, max_wait_ms: int, allowed: int, waits_ms: list[int]) -> None:
    """10 requests at one instant on 5 per second: the first 5 pass, each next one waits 200 ms more than the one
    before (TAT − now), as long as that is within max_wait; the rest get 429 at once."""
    sleep = RecordingSleep()
    limiter = RateLimiter(storage, ManualClock(), timeout_ms=2000, sleep=sleep)
    check = queued(key, max_wait_ms)
    results = [await limiter.check([check]) for _ in range(10)]
    assert sum(result.allowed for result in results) == allowed
    assert [round(result.waited_seconds * 1000) for result in results if result.allowed] == waits_ms
    assert [round(wait * 1000) for wait in sleep.waits] == [wait for wait in waits_ms if wait]
    assert limiter.stats.queued == len(sleep.waits)
    assert limiter.stats.queue_refused == 10 - allowed
    assert limiter.stats.rejections == 10 - allowed


@settings(max_examples=80, deadline=None)
@example(burst=3, limit=1, period_ms=1000, max_wait_ms=8000, cost=2)  # a cost above the limit: never conforms
@given(burst=st.integers(1, 40), limit=st.integers(1, 20), period_ms=st.sampled_from([1000, 7000, 60_000]),
       max_wait_ms=st.integers(1, 8000), cost=st.integers(1, 3))
def test_every_burst_admits_the_limit_then_whoever_conforms_within_max_wait_at_its_exact_time(
        burst: int, limit: int, period_ms: int, max_wait_ms: int, cost: int) -> None:
    """Over generated bursts at one instant: the first `limit // cost` pass at once, the j-th after them waits
    exactly ceil(j x cost x period / limit) ms (TAT − now), and everyone whose wait exceeds max_wait gets 429."""
    sleep = RecordingSleep()
    limiter = RateLimiter(MemoryStorage(), ManualClock(), sleep=sleep)
    check = queued("burst|sub=x", max_wait_ms, Limit(limit, period_ms / 1000), cost)

    async def run() -> list[float]:
        return [(await limiter.check([check])).waited_seconds for _ in range(burst)]

    asyncio.run(run())
    at_once = limit // cost
    expected = [-(-(at_once * cost + j * cost - limit) * period_ms // limit) for j in range(1, burst - at_once + 1)]
    within = [wait for wait in expected if wait <= max_wait_ms]
    if at_once == 0:
        within = []  # a cost above the limit never conforms
    assert [round(wait * 1000) for wait in sleep.waits] == within
    assert limiter.stats.rejections == burst - min(burst, at_once) - len(within)


async def test_a_limit_without_queueing_and_a_shadow_limit_keep_their_answers(key: str) -> None:
    """A request over a limit that does not queue gets its 429 even if another of its limits queues; a shadow
    limit's would-be rejection never makes a request wait."""
    sleep = RecordingSleep()
    limiter = RateLimiter(MemoryStorage(), ManualClock(), sleep=sleep)
    strict = LimitCheck(key + "/strict", Limit(1, 60))
    patient = queued(key + "/patient", 5000, Limit(1, 1))
    assert (await limiter.check([strict, patient])).allowed
    assert not (await limiter.check([strict, patient])).allowed
    shadow = LimitCheck(key + "/shadow", Limit(1, 60), shadow=True, max_wait_ms=5000)
    assert (await limiter.check([shadow])).allowed and (await limiter.check([shadow])).allowed
    assert sleep.waits == []


async def test_no_more_than_max_waiting_checks_wait_for_one_key(storage, key: str) -> None:
    """With room for 2 waiters, a burst of 10 on 5 per second: 5 pass, 2 wait, 3 get 429 at once."""
    sleep = BlockingSleep()
    limiter = RateLimiter(storage, ManualClock(), timeout_ms=2000, sleep=sleep, queue_max_waiting=2)
    check = queued(key, 5000)
    tasks = [asyncio.create_task(limiter.check([check])) for _ in range(10)]
    while sleep.waiting < 2 or sum(task.done() for task in tasks) < 8:
        await asyncio.sleep(0.001)
    assert limiter.waiting == {key: 2}
    sleep.release.set()
    results = await asyncio.gather(*tasks)
    assert sum(result.allowed for result in results) == 7
    assert limiter.waiting == {}


async def test_a_cancelled_waiter_leaves_the_queue_and_gives_back_its_units(storage, key: str) -> None:
    """Envoy cancels two waiting Checks: they leave the queue, their units return to the bucket, and the next
    request waits only as long as the first of them would have."""
    sleep = BlockingSleep()
    clock = ManualClock()
    limiter = RateLimiter(storage, clock, timeout_ms=2000, sleep=sleep)
    check = queued(key, 5000)
    for _ in range(5):
        assert (await limiter.check([check])).allowed
    waiters = [asyncio.create_task(limiter.check([check])) for _ in range(2)]
    while sleep.waiting < 2:
        await asyncio.sleep(0.001)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.gather(*limiter._releases)
    assert limiter.waiting == {} and limiter.stats.queue_cancelled == 2
    recording = RecordingSleep()
    limiter._sleep = recording
    assert (await limiter.check([check])).waited_seconds == 0.2
    assert recording.waits == [0.2]


class SlowReservations(InProcessReservations):
    """Reserves, then answers only when `answer` is set: a store reply still on its way when Envoy cancels."""

    def __init__(self, storage: MemoryStorage) -> None:
        super().__init__(storage)
        self.answer = asyncio.Event()
        self.reserved = asyncio.Event()

    async def reserve(self, checks, now_ms: int) -> Reservation:
        reservation = await super().reserve(checks, now_ms)
        self.reserved.set()
        await self.answer.wait()
        return reservation


async def test_a_check_cancelled_while_the_store_reserves_releases_the_reservation(key: str) -> None:
    """Cancelled before the reservation's reply arrives: once it arrives, the reserved units are released."""
    storage = MemoryStorage()
    reservations = SlowReservations(storage)
    recording = RecordingSleep()
    limiter = RateLimiter(storage, ManualClock(), sleep=recording, reservations=reservations)
    check = queued(key, 5000)
    for _ in range(5):
        assert (await limiter.check([check])).allowed
    waiter = asyncio.create_task(limiter.check([check]))
    await reservations.reserved.wait()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert limiter.waiting == {} and limiter.stats.queue_cancelled == 1
    reservations.answer.set()
    for _ in range(100):  # the reply lands, then its release starts
        await asyncio.sleep(0)
    await asyncio.gather(*limiter._releases)
    assert (await limiter.check([check])).waited_seconds == 0.2


def test_a_reservation_is_all_or_nothing_across_a_requests_limits() -> None:
    """One check beyond its tolerance: nothing is reserved, and the wait it would need is reported."""
    per_subject, per_tenant = queued("a|s=1", 1000), LimitCheck("b|t=1", Limit(1, 1))
    states: dict[str, State | None] = {per_subject.storage_key: None, per_tenant.storage_key: (1_000_500, 0)}
    reservation, new_states = reserve([(per_subject, 1000), (per_tenant, 0)], 1_000_000, states)
    assert reservation == Reservation(False, 500) and new_states == {}


POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: shop}
roles: {free: []}
routes:
  - name: search
    match: {path: {prefix: /search}}
    rules: [{name: members, when: {roles: [free]}}]
    limits:
      - {name: per-subject, key: [subject], windows: [{requests: 5, per: 1s}], LIMIT}
"""


@pytest.mark.parametrize("fields,message", [
    ("on_limit: queue", "on_limit: queue needs max_wait"),
    ("max_wait: 1s", "max_wait is set, but on_limit is not queue"),
    ("on_limit: queue, max_wait: 1s, mode: leased", "on_limit: queue needs mode: exact"),
    ("on_limit: queue, max_wait: 2m", "less than or equal to 60"),
])
def test_queue_fields_that_do_not_fit_together_are_load_errors(tmp_path: Path, fields: str, message: str) -> None:
    """`on_limit: queue` without `max_wait`, `max_wait` without it, queued and leased, a wait over 60 s."""
    (tmp_path / "shop.yaml").write_text(POLICY.replace("LIMIT", fields))
    with pytest.raises(ConfigError, match=message):
        compile_policy(tmp_path, ManualClock())


def test_a_queued_limit_reaches_its_checks_with_its_max_wait(tmp_path: Path) -> None:
    """`on_limit: queue, max_wait: 250ms` becomes `max_wait_ms=250` on every window of the limit."""
    from extauth.request import Request
    from extauth.tools.synthetic import check_request, principal

    (tmp_path / "shop.yaml").write_text(POLICY.replace("LIMIT", "on_limit: queue, max_wait: 250ms"))
    policy = compile_policy(tmp_path, ManualClock())
    request = Request(check_request("/search"))
    decision = policy.engine.authorize(request, principal("alice", ["free"]))
    assert [check.max_wait_ms for check in policy.limits.checks_for(request, decision)] == [250]
    (applied,) = policy.limits.applicable(request, decision)
    assert "queued up to 250ms over the limit" in applied.describe()
    assert applied.summary.endswith(", queued up to 250ms")



class FailingReservations(InProcessReservations):
    """The store fails at the reservation (after the first call answered)."""

    async def reserve(self, checks, now_ms: int) -> Reservation:
        raise StorageError("redis: ConnectionError: gone")


async def test_a_reservation_the_store_cannot_make_keeps_the_429(key: str) -> None:
    """The store failing between the rejection and the reservation: the request gets its 429 at once, leaves the
    queue, and the failure counts towards the breaker."""
    storage = MemoryStorage()
    sleep = RecordingSleep()
    limiter = RateLimiter(storage, ManualClock(), sleep=sleep, reservations=FailingReservations(storage))
    check = queued(key, 5000)
    results = [await limiter.check([check]) for _ in range(6)]
    assert [result.allowed for result in results] == [True] * 5 + [False]
    assert sleep.waits == [] and limiter.waiting == {}
    assert limiter.stats.queue_refused == 1 and limiter.breaker.consecutive_failures == 1
