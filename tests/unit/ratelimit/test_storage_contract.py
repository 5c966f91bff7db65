"""One behaviour suite over every backend: the in-process storage, Redis standalone and a real 3-node Cluster."""

import random

import pytest

from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.model import Limit, LimitCheck, LimitOutcome
from extauth.ratelimit.redis import RedisStorage

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000  # ms
FIVE_PER_10S = Limit(5, 10)  # emission interval 2 s


def allowed(outcomes: list[LimitOutcome]) -> list[bool]:
    return [o.allowed for o in outcomes]


async def admitted(storage, checks: list[LimitCheck], now_ms: int, attempts: int) -> int:
    count = 0
    for _ in range(attempts):
        outcomes = await storage.acquire(checks, now_ms)
        count += all(o.allowed for o in outcomes if not o.shadow)
    return count


async def test_a_full_bucket_admits_exactly_the_burst(storage, key):
    """A fresh key admits `limit` requests at one instant, then rejects with the time until one more fits."""
    check = LimitCheck(key, FIVE_PER_10S)
    answers = [(await storage.acquire([check], NOW))[0] for _ in range(7)]
    assert [a.allowed for a in answers] == [True] * 5 + [False] * 2
    assert [a.remaining for a in answers] == [4, 3, 2, 1, 0, 0, 0]
    assert answers[4].reset_after_seconds == 10.0
    assert answers[5].retry_after_seconds == 2.0
    assert answers[0].retry_after_seconds == 0.0


async def test_the_bucket_refills_one_request_per_emission_interval(storage, key):
    """After the burst, one request fits every period/limit, and a whole period refills the whole burst."""
    check = LimitCheck(key, FIVE_PER_10S)
    assert await admitted(storage, [check], NOW, 6) == 5
    assert await admitted(storage, [check], NOW + 1999, 3) == 0
    assert await admitted(storage, [check], NOW + 2000, 3) == 1
    assert await admitted(storage, [check], NOW + 12_000, 9) == 5


async def test_a_limit_that_does_not_divide_the_period_stays_exact(storage, key):
    """3 per 10 s (an emission interval of 3333.3 ms) admits 3, then one at 3334 ms, never one at 3333 ms."""
    check = LimitCheck(key, Limit(3, 10))
    assert await admitted(storage, [check], NOW, 5) == 3
    assert await admitted(storage, [check], NOW + 3333, 2) == 0
    assert await admitted(storage, [check], NOW + 3334, 2) == 1
    assert await admitted(storage, [check], NOW + 10_000, 5) == 2


async def test_several_windows_on_one_key_all_apply(storage, key):
    """A burst of 2 per 10 s and a quota of 5 per day on one key: the burst refills, the quota does not."""
    checks = [LimitCheck(key, Limit(2, 10)), LimitCheck(key, Limit(5, 86_400))]
    assert await admitted(storage, checks, NOW, 4) == 2
    assert await admitted(storage, checks, NOW + 10_000, 4) == 2
    assert await admitted(storage, checks, NOW + 20_000, 4) == 1
    outcomes = await storage.acquire(checks, NOW + 30_000)
    assert allowed(outcomes) == [True, False]
    assert outcomes[1].retry_after_seconds == pytest.approx(86_400 / 5 - 30, abs=0.001)


async def test_a_rejected_request_consumes_nothing(storage, key):
    """When one window rejects, the other windows of the request keep their room (a daily quota is not burnt)."""
    burst, quota = LimitCheck(key, Limit(1, 10)), LimitCheck(key, Limit(3, 86_400))
    assert allowed(await storage.acquire([burst, quota], NOW)) == [True, True]
    for _ in range(5):
        outcomes = await storage.acquire([burst, quota], NOW + 1)
        assert allowed(outcomes) == [False, True]
        assert outcomes[1].remaining == 2
    assert (await storage.acquire([quota], NOW + 2))[0].remaining == 1


async def test_a_rejected_request_consumes_nothing_across_keys_in_one_slot(storage, key):
    """All-or-nothing holds across different keys that share a hash tag (on Cluster: one slot)."""
    key, other = key.replace("sub=alice", "{sub=alice}"), key.replace("|sub=alice", "/admin|{sub=alice}")
    tight, loose = LimitCheck(key, Limit(1, 10)), LimitCheck(other, Limit(10, 10))
    await storage.acquire([tight], NOW)
    outcomes = await storage.acquire([loose, tight], NOW)
    assert allowed(outcomes) == [True, False]
    assert (await storage.acquire([loose], NOW))[0].remaining == 9


async def test_cost_consumes_several_units_and_cannot_exceed_the_limit(storage, key):
    """A request of cost 3 takes 3 of 5; another 3 does not fit (and takes nothing); 2 does; 6 never fits."""
    def check(cost: int) -> LimitCheck:
        return LimitCheck(key, FIVE_PER_10S, cost=cost)

    first = (await storage.acquire([check(3)], NOW))[0]
    assert (first.allowed, first.remaining) == (True, 2)
    second = (await storage.acquire([check(3)], NOW))[0]
    assert (second.allowed, second.remaining, second.retry_after_seconds) == (False, 2, 2.0)
    assert (await storage.acquire([check(2)], NOW))[0].remaining == 0
    assert not (await storage.acquire([check(6)], NOW + 3_600_000))[0].allowed


async def test_shadow_checks_report_would_be_rejections_without_enforcing(storage, key):
    """A shadow limit of 1 beside an enforced limit of 10: every request passes, the shadow one reports rejections."""
    enforced, shadow = LimitCheck(key, Limit(10, 10)), LimitCheck(key, Limit(1, 10), shadow=True)
    answers = [await storage.acquire([enforced, shadow], NOW) for _ in range(3)]
    assert [allowed(a) for a in answers] == [[True, True], [True, False], [True, False]]
    assert answers[2][0].remaining == 7


async def test_shadow_checks_are_consumed_independently_of_the_enforced_verdict(storage, key):
    """A shadow check takes its unit whenever it would itself allow, even if an enforced check rejects."""
    enforced, shadow = LimitCheck(key, Limit(1, 10)), LimitCheck(key, Limit(3, 10), shadow=True)
    outcomes = [await storage.acquire([enforced, shadow], NOW) for _ in range(3)]
    assert [allowed(o) for o in outcomes] == [[True, True], [False, True], [False, True]]
    assert outcomes[2][1].remaining == 0


async def test_one_call_evaluates_several_requests_in_order(storage, key):
    """`acquire_many` is the same as the requests one after another, each all-or-nothing on its own."""
    check = LimitCheck(key, Limit(2, 10))
    other = LimitCheck(key + "/other", Limit(1, 10))
    results = await storage.acquire_many([[check], [check, other], [check], [other]], NOW)
    assert [allowed(r) for r in results] == [[True], [True, True], [False], [False]]


async def test_the_same_window_twice_in_one_request_counts_twice(storage, key):
    """Two checks on the same window consume two units, as two requests would."""
    check = LimitCheck(key, Limit(3, 10))
    assert allowed(await storage.acquire([check, check], NOW)) == [True, True]
    assert allowed(await storage.acquire([check, check], NOW)) == [True, False]
    assert (await storage.acquire([check], NOW))[0].remaining == 0


async def test_state_is_forgotten_once_the_bucket_is_full_again(storage, key):
    """After `reset_after_seconds` the key behaves as new (and in Redis its TTL has that length)."""
    check = LimitCheck(key, FIVE_PER_10S)
    outcome = (await storage.acquire([check, check], NOW))[1]
    assert outcome.reset_after_seconds == 4.0
    if isinstance(storage, RedisStorage):
        assert 3000 < await storage.client.pttl(check.storage_key) <= 4000
    if isinstance(storage, MemoryStorage):
        await storage.acquire([LimitCheck(key + "/x", FIVE_PER_10S)], NOW + 4000)  # touch the map
    assert (await storage.acquire([check], NOW + 4000))[0].remaining == 4


async def test_every_backend_answers_like_the_in_process_one(storage, key):
    """A random workload (several keys in one slot, windows, costs, shadow, time steps) gets identical answers."""
    rng = random.Random(7)
    reference = MemoryStorage()
    limits = [Limit(3, 10), Limit(7, 60), Limit(20, 86_400), Limit(4, 1)]
    now = NOW
    for step in range(150):
        now += rng.choice([0, 0, 1, 250, 999, 1000, 3333])
        checks = [LimitCheck(f"{{{key}}}/{rng.randrange(3)}", rng.choice(limits), cost=rng.choice([1, 1, 2]),
                             shadow=rng.random() < 0.2) for _ in range(rng.randrange(1, 4))]
        expected = await reference.acquire(checks, now)
        got = await storage.acquire(checks, now)
        assert got == expected, f"step {step}: {checks}"
