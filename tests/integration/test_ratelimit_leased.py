"""Leased mode across two OS processes on real Redis (standalone and Cluster), over generated bursts."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.ratelimit.lease import LEASE_SHARE

pytestmark = [pytest.mark.integration, pytest.mark.redis]

MAX_TOKENS = 64
#: Long enough that no lease expires mid-burst on a loaded machine (expiry strands units: an under-admission).
TTL_MS = 10_000

WORKER = """
import asyncio, dataclasses, json, sys
from extauth.clock import SystemClock
from extauth.ratelimit import Limit, LimitCheck, RateLimiter, open_storage
from extauth.ratelimit.lease import LeaseBook

async def main(url, ttl_ms, max_tokens):
    limiter = RateLimiter(open_storage(url, timeout_ms=5000), SystemClock(), timeout_ms=5000, batch_window_us=0,
                          leases=LeaseBook(ttl_ms, max_tokens))
    await limiter.storage.ping()
    print("ready", flush=True)
    for line in sys.stdin:
        burst = json.loads(line)
        checks = [LimitCheck(burst["key"], Limit(burst["limit"], 86_400), mode="leased")]
        before = dataclasses.asdict(limiter.stats)

        async def hammer():
            admitted = 0
            for _ in range(burst["per_task"]):
                admitted += (await limiter.check(checks)).allowed
            return admitted

        admitted = sum(await asyncio.gather(*(hammer() for _ in range(burst["tasks"]))))
        stats = {name: value - before[name] for name, value in dataclasses.asdict(limiter.stats).items()}
        print(json.dumps({"admitted": admitted, "stats": stats}), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


class Workers:
    """Two extauth limiter processes on one Redis, fed bursts one at a time and released together."""

    def __init__(self, url: str) -> None:
        self.processes = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(TTL_MS), str(MAX_TOKENS)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                          for _ in range(2)]
        for process in self.processes:
            assert process.stdout.readline().strip() == "ready"

    def burst(self, **spec: object) -> list[dict]:
        line = json.dumps(spec) + "\n"
        for process in self.processes:
            process.stdin.write(line)
            process.stdin.flush()
        return [json.loads(process.stdout.readline()) for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            process.stdin.close()
            process.wait(timeout=10)


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def workers(request: pytest.FixtureRequest) -> Iterator[Workers]:
    server = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    pool = Workers(server.url)
    yield pool
    pool.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(20, 1500), tasks=st.integers(1, 24), extra=st.integers(1, 300))
def test_two_processes_admit_the_limit_within_what_their_leases_strand(workers: Workers, limit: int, tasks: int,
                                                                      extra: int) -> None:
    """Each process alone asks for more than a day's limit: together they admit at most the limit (units are
    taken in Redis when leased) and at least the limit minus what two leases can hold unspent, in far fewer
    Redis calls than requests."""
    per_task = -(-(limit + extra) // tasks)
    reports = workers.burst(key=f"leased/{uuid.uuid4().hex}|sub=alice", limit=limit, tasks=tasks, per_task=per_task)
    admitted = sum(report["admitted"] for report in reports)
    cap = max(1, min(MAX_TOKENS, limit // LEASE_SHARE))
    assert limit - 2 * (cap - 1) <= admitted <= limit
    assert all(report["stats"]["degraded"] == 0 and report["stats"]["backend_errors"] == 0 for report in reports)
    requests = sum(report["stats"]["requests"] for report in reports)
    assert requests == 2 * tasks * per_task
    if cap > 4:
        assert sum(report["stats"]["lease_calls"] for report in reports) < requests / 2
