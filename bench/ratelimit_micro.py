"""µs per `RateLimiter.check` (wall time / checks), in process on uvloop: memory vs a real redis-server,
1 and 3 limits, with and without batching, at concurrency 1 and 32; plus the bare Redis round trip.

Redis is started by the bench (`extauth.devstack.redis`) on this machine, so the round trip is loopback TCP:
a remote Redis adds its network latency at concurrency 1, which batching cannot hide. Each figure is the best of
several rounds of at least 0.2 s.
"""

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from extauth.clock import SystemClock
from extauth.devstack.redis import RedisServer
from extauth.ratelimit import Limit, LimitCheck, MemoryStorage, RateLimiter
from extauth.ratelimit.redis import RedisStorage

ROUNDS = 3
MIN_ROUND_SECONDS = 0.2


def checks_for(task: int, limits: int) -> list[LimitCheck]:
    key = f"bench/api|sub=user{task}"
    windows = [Limit(10**6, 1), Limit(10**7, 3600), Limit(10**7, 86_400)][:limits]
    return [LimitCheck(key, window) for window in windows]


async def per_call_us(call: Callable[[int], Awaitable[object]], concurrency: int) -> float:
    """Best µs per call over ROUNDS rounds, `concurrency` tasks calling in a loop."""
    per_task = 50
    while True:
        start = time.perf_counter()
        await asyncio.gather(*(_loop(call, task, per_task) for task in range(concurrency)))
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_ROUND_SECONDS:
            break
        per_task = int(per_task * MIN_ROUND_SECONDS / max(elapsed, 1e-3) * 1.2) + 1
    best = elapsed
    for _ in range(ROUNDS - 1):
        start = time.perf_counter()
        await asyncio.gather(*(_loop(call, task, per_task) for task in range(concurrency)))
        best = min(best, time.perf_counter() - start)
    return best / (per_task * concurrency) * 1e6


async def _loop(call: Callable[[int], Awaitable[object]], task: int, n: int) -> None:
    for _ in range(n):
        await call(task)


async def run(redis_url: str) -> list[tuple[str, int, int, float, str]]:
    rows = []
    storage = RedisStorage.from_url(redis_url, timeout_ms=1000)
    for concurrency in (1, 32):
        us = await per_call_us(lambda task: storage.client.ping(), concurrency)
        rows.append(("redis-py PING (bare round trip)", 0, concurrency, us, ""))
    await storage.close()
    variants: list[tuple[str, Callable[[], RateLimiter]]] = [
        ("memory", lambda: RateLimiter(MemoryStorage(), SystemClock())),
        ("redis", lambda: RateLimiter(RedisStorage.from_url(redis_url, timeout_ms=1000), SystemClock(),
                                      timeout_ms=1000)),
        ("redis, batched (same loop turn)", lambda: RateLimiter(
            RedisStorage.from_url(redis_url, timeout_ms=1000), SystemClock(), timeout_ms=1000, batch_window_us=0)),
        ("redis, batched (200 µs window)", lambda: RateLimiter(
            RedisStorage.from_url(redis_url, timeout_ms=1000), SystemClock(), timeout_ms=1000, batch_window_us=200)),
    ]
    for name, make in variants:
        for limits in (1, 3):
            for concurrency in (1, 32):
                limiter = make()
                requests = {task: checks_for(task, limits) for task in range(concurrency)}

                async def call(task: int, limiter: RateLimiter = limiter, requests=requests) -> None:
                    result = await limiter.check(requests[task])
                    assert result.allowed and not result.degraded

                us = await per_call_us(call, concurrency)
                batches = limiter.stats.batches
                note = f"{limiter.stats.requests / batches:.1f} checks/round trip" if batches else ""
                rows.append((name, limits, concurrency, us, note))
                await limiter.close()
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        rows = uvloop.run(run(redis.url))
    print(f"{'variant':<34} {'limits':>6} {'conc.':>5} {'µs/check':>9}  note")
    for name, limits, concurrency, us, note in rows:
        print(f"{name:<34} {limits or '-':>6} {concurrency:>5} {us:>9.1f}  {note}")


if __name__ == "__main__":
    main()
