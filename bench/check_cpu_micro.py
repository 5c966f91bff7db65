"""CPU per Check of the production path in process: check_throughput.py's d, f and g without gRPC and Envoy.

`Pipeline.check` for the bench's JWT request (cache warm) with the demo policies without their WAF (no limit on
that route: d), or with `bench/policies/limited.yaml` (two windows) counted in process (f) or in a local redis-server
with batching on (g), 32 Checks at a time, the audit writer task on the same loop writing to a file. The figure is
this process's CPU time (user + system, writer thread included) per Check, best of several rounds: what extauth's
own Python costs per Check, which no load on the machine inflates the way it inflates requests/s. The Redis timeout
is raised to 2 s so that a stall of this shared machine cannot degrade a Check (a degraded Check skips Redis and
would look cheaper).
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import uvloop
import yaml
from check_throughput import demo_policies
from pipeline_micro import envoy_check_request

import extauth
from extauth import logs
from extauth.config import load_config
from extauth.devstack.gateway import extauth_config
from extauth.devstack.redis import RedisServer
from extauth.devtools.certs import create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.server import ExtauthServer

POLICY = Path(__file__).parent / "policies" / "limited.yaml"
CONCURRENT = 32
CHECKS_PER_TASK = 100
ROUNDS = 7


async def cpu_per_check(work_dir: Path, backend: str, policy: Path = POLICY) -> tuple[float, int]:
    """Best-of-ROUNDS CPU µs per Check, and how many Checks were degraded (must be 0 for the figure to count)."""
    certs = create_dev_certs(work_dir / "certs")
    config_path = work_dir / "extauth.yaml"
    config_path.write_text(yaml.safe_dump(extauth_config(work_dir, certs, policy={"path": str(policy)},
                                                         rate_limit={"backend": backend, "timeout_ms": 2000})))
    logs.configure("warning")
    server = ExtauthServer(load_config(config_path), config_path)
    await server.audit.start()
    await server.authenticator.start()
    await server.rate_limiter.warm_up()
    token = mint_token(certs.jwt_signing_key, subject="bench-reader", claims={"roles": ["reader"]})
    check = envoy_check_request("/api/orders", token)

    async def checks(count: int) -> None:
        for _ in range(count):
            await server.pipeline.check(check)

    async def round_of(count: int) -> float:
        started = time.process_time_ns()
        await asyncio.gather(*(checks(count) for _ in range(CONCURRENT)))
        await asyncio.sleep(0.06)  # the writer's linger: its batch of this round is written and counted
        return (time.process_time_ns() - started) / (count * CONCURRENT) / 1000

    try:
        await round_of(CHECKS_PER_TASK // 2)  # warm-up
        best = min([await round_of(CHECKS_PER_TASK) for _ in range(ROUNDS)])
    finally:
        await server.audit.close()
        await server.authenticator.stop()
        await server.rate_limiter.close()
    return best, server.rate_limiter.stats.degraded


def main() -> int:
    print(f"Pipeline.check, JWT (cache warm), d: demo policies, f/g: + {POLICY.name}, {CONCURRENT} concurrent, "
          f"audit to a file; {extauth.NATIVE_STATUS}; "
          f"process CPU µs per Check, best of {ROUNDS} rounds of {CONCURRENT * CHECKS_PER_TASK}")
    with tempfile.TemporaryDirectory(prefix="extauth-cpu-micro-") as temp:
        work_dir = Path(temp)
        redis = RedisServer(work_dir / "redis").start()
        try:
            for name, backend in (("d. no limit", "memory://"), ("f. in process", "memory://"),
                                  ("g. Redis", redis.url)):
                run_dir = work_dir / name[0]
                run_dir.mkdir()
                policy = demo_policies(None, run_dir / "policies") if name.startswith("d") else POLICY
                cpu, degraded = uvloop.run(cpu_per_check(run_dir, backend, policy))
                print(f"{name:<14} {cpu:6.1f} µs/Check  (degraded Checks: {degraded})")
                if degraded:
                    print("  degraded Checks skipped the store: this figure understates", file=sys.stderr)
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
