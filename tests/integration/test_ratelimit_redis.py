"""Rate limits against real Redis processes: exact admission across processes, and Redis dying mid-run."""

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauth.clock import ManualClock
from extauth.devstack.redis import RedisCluster, RedisServer
from extauth.ratelimit import BreakerState, CircuitBreaker, Limit, LimitCheck, RateLimiter, RateLimitResult
from extauth.ratelimit.redis import RedisStorage

pytestmark = [pytest.mark.integration, pytest.mark.redis]

WORKER = """
import asyncio, dataclasses, json, sys
from extauth.clock import SystemClock
from extauth.ratelimit import Limit, LimitCheck, RateLimiter, open_storage

async def main(url, key, limit, tasks, per_task, batch):
    limiter = RateLimiter(open_storage(url, timeout_ms=5000), SystemClock(), timeout_ms=5000,
                          batch_window_us=0 if batch == "batch" else None)
    # Two windows on one key: a daily quota (the one that binds) and a weekly one.
    checks = [LimitCheck(key, Limit(limit, 86_400)), LimitCheck(key, Limit(limit * 10, 7 * 86_400))]
    await limiter.storage.ping()
    print("ready", flush=True)
    sys.stdin.readline()

    async def hammer():
        admitted = 0
        for _ in range(per_task):
            admitted += (await limiter.check(checks)).allowed
        return admitted

    admitted = sum(await asyncio.gather(*(hammer() for _ in range(tasks))))
    print(json.dumps({"admitted": admitted, "stats": dataclasses.asdict(limiter.stats)}), flush=True)

url, key, limit, tasks, per_task, batch = sys.argv[1:]
asyncio.run(main(url, key, int(limit), int(tasks), int(per_task), batch))
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


def hammer(url: str, key: str, limit: int, processes: int, tasks: int, per_task: int, batch: bool) -> list[dict]:
    """Start `processes` workers, release them together, and collect what each admitted."""
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, key, str(limit), str(tasks), str(per_task),
                                 "batch" if batch else "direct"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert all(worker.returncode == 0 for worker in workers)
    return reports


@pytest.mark.parametrize("backend,batch", [("redis", False), ("redis", True), ("redis-cluster", False)])
def test_processes_hammering_one_key_admit_exactly_the_limit(request, backend, batch):
    """3 processes x 25 concurrent tasks, 1500 requests for a limit of 400 per day: exactly 400 are admitted."""
    url = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster").url
    reports = hammer(url, f"exact/{uuid.uuid4().hex}|sub=alice", limit=400, processes=3, tasks=25, per_task=20,
                     batch=batch)
    # How the 400 split between processes is the scheduler's business (on a loaded machine one process may get
    # no CPU until the others are done); that the three together admit exactly 400 is the store's.
    assert sum(r["admitted"] for r in reports) == 400
    assert sum(r["stats"]["requests"] for r in reports) == 1500
    assert all(r["stats"]["backend_errors"] == 0 and r["stats"]["degraded"] == 0 for r in reports)


MODES = ("open", "closed", "local")


class Hammer:
    """Concurrent tasks sending one check per failure mode, in turn, and tallying what they get."""

    def __init__(self, limiter: RateLimiter, key: str, tasks: int = 30) -> None:
        self.limiter = limiter
        self.checks = {mode: LimitCheck(f"{key}/{mode}", Limit(100_000, 86_400), failure_mode=mode)
                       for mode in MODES}
        self.seen: Counter[tuple[str, str]] = Counter()
        self.running = True
        self.tasks = [asyncio.create_task(self._run(i)) for i in range(tasks)]

    @staticmethod
    def verdict(result: RateLimitResult) -> str:
        if not result.degraded:
            return "counted" if result.allowed else "rejected"
        return "unavailable" if result.unavailable else "allowed-degraded" if result.allowed else "local-rejected"

    async def _run(self, index: int) -> None:
        while self.running:
            mode = MODES[index % 3]
            self.seen[(mode, self.verdict(await self.limiter.check([self.checks[mode]])))] += 1
            index += 1
            await asyncio.sleep(0)

    async def until(self, condition, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)


async def counts_again_after_cooldown(load: "Hammer", limiter: RateLimiter, clock: ManualClock) -> None:
    """Once the breaker's cool-down passes, its probe closes it and every following check is counted by Redis."""
    clock.advance(1)
    await load.until(lambda: limiter.breaker_state is BreakerState.CLOSED)
    after = load.seen.copy()
    await load.until(lambda: sum((load.seen - after).values()) > 300)
    assert {verdict for (_, verdict) in load.seen - after} == {"counted"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_killing_redis_mid_run_gives_each_failure_mode_then_recovers(own_redis):
    """Redis SIGKILLed under load: open allows, closed is unavailable, local counts locally; restarted, Redis counts."""
    clock = ManualClock()
    storage = RedisStorage.from_url(own_redis.url, timeout_ms=100)
    limiter = RateLimiter(storage, clock, timeout_ms=100,
                          breaker=CircuitBreaker(clock, failure_threshold=3, cooldown_seconds=1))
    load = Hammer(limiter, f"kill/{uuid.uuid4().hex}")
    try:
        await load.until(lambda: limiter.stats.requests > 300)
        assert {mode for (mode, verdict) in load.seen if verdict == "counted"} == set(MODES)

        own_redis.kill()  # requests in flight see their connection drop
        await load.until(lambda: limiter.breaker_state is BreakerState.OPEN)
        before, cut_off = load.seen.copy(), limiter.stats.short_circuited
        await load.until(lambda: limiter.stats.short_circuited > cut_off + 300)
        during = load.seen - before
        assert set(during) == {("open", "allowed-degraded"), ("closed", "unavailable"), ("local", "allowed-degraded")}
        # The breaker, not a timeout per request: at most about one failed call per task in flight when Redis
        # died (each may re-issue once before the breaker opens), while hundreds are answered without a call.
        assert limiter.stats.backend_errors < 2 * len(load.tasks) + 3
        assert limiter.degraded

        own_redis.restart()
        await counts_again_after_cooldown(load, limiter, clock)
    finally:
        await load.stop()
        await limiter.close()


async def test_a_hung_redis_mid_run_is_cut_off_by_the_timeout_and_the_breaker(own_redis):
    """Redis SIGSTOPped under load: calls end at the timeout, the breaker opens, failure modes answer; SIGCONT heals."""
    clock = ManualClock()
    storage = RedisStorage.from_url(own_redis.url, timeout_ms=2000)  # the limiter's 50 ms must be what fires
    limiter = RateLimiter(storage, clock, timeout_ms=50,
                          breaker=CircuitBreaker(clock, failure_threshold=3, cooldown_seconds=1))
    load = Hammer(limiter, f"hang/{uuid.uuid4().hex}")
    try:
        await load.until(lambda: limiter.stats.requests > 300)
        own_redis.pause()
        try:
            await load.until(lambda: limiter.stats.short_circuited > 300)
            assert {verdict for (_, verdict) in load.seen} >= {"allowed-degraded", "unavailable"}
            assert limiter.stats.timeouts >= 3 and limiter.breaker_state is BreakerState.OPEN
            assert limiter.stats.backend_errors == limiter.stats.timeouts
        finally:
            own_redis.resume()
        await counts_again_after_cooldown(load, limiter, clock)
    finally:
        await load.stop()
        await limiter.close()
