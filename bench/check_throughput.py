"""Throughput of the gateway with and without ext_authz, measured side by side in one run (`make bench`).

Every variant runs the shipped Envoy bootstrap (rendered onto free ports, `--concurrency 1`) with each route
answering 200 itself (`direct_response`, context_extensions kept), so no Python upstream limits throughput, and
is loaded with `wrk -t1 -cN --latency` over HTTPS. On a machine where Envoy, wrk and the servicer share few
cores, absolute requests/s mean little: compare the ratios and the CPU-µs per request.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import Node, connection_managers
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, free_port
from extauth.devstack.processes import ManagedProcess, ProcessError, grpc_serving
from extauth.devstack.redis import RedisServer
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token

NOOP_SERVICER = Path(__file__).with_name("noop_authz.py")
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
WARMUP_SECONDS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


class BenchError(RuntimeError):
    """A variant produced results that would make its figures meaningless (non-2xx answers, a failed probe)."""


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    #: "none" removes the ext_authz filter; "noop" is bench/noop_authz.py; "extauth" is `extauth serve`.
    servicer: str
    path: str
    with_token: bool
    workers: int = 1
    #: None: the demo policy, no limits. "memory" / "redis": bench/policies/limited.yaml (two windows per
    #: request, never exceeded) counted in process or in a local redis-server.
    limits: str | None = None


# a, b, d and e send the same request (JWT path with a token), so their ratios compare like with like.
VARIANTS = (
    Variant("a", "Envoy alone, ext_authz filter removed", "none", "/api/orders", with_token=True),
    Variant("b", "ext_authz -> no-op Python servicer", "noop", "/api/orders", with_token=True),
    Variant("c", "ext_authz -> extauth, public route", "extauth", "/public/x", with_token=False),
    Variant("d", "ext_authz -> extauth, JWT (cache warm)", "extauth", "/api/orders", with_token=True),
    Variant("e", "same as d, extauth --workers 2", "extauth", "/api/orders", with_token=True, workers=2),
    Variant("f", "same as d + 2 rate-limit windows in process", "extauth", "/api/orders", with_token=True,
            limits="memory"),
    Variant("g", "same as d + 2 rate-limit windows in Redis", "extauth", "/api/orders", with_token=True,
            limits="redis"),
)
LIMITED_POLICY = Path(__file__).parent / "policies"


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


@dataclass(frozen=True)
class Servicer:
    #: One per worker, each listed as an Envoy endpoint.
    endpoints: list[ListenAddress]
    #: The process whose CPU (with its children's) is charged to the servicer; None without ext_authz.
    pid: int | None = None
    audit: Path | None = None


@dataclass(frozen=True)
class Result:
    variant: Variant
    run: WrkRun
    servicer_cpu_us: float | None
    envoy_cpu_us: float


def serve_directly(bootstrap: Node, *, with_ext_authz: bool) -> None:
    """Each route answers 200 from Envoy itself, keeping its typed_per_filter_config (context_extensions);
    without ext_authz the filter leaves the chain and what remains is the proxy's own ceiling."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for manager in connection_managers(listener):
            for virtual_host in manager["route_config"]["virtual_hosts"]:
                for route in virtual_host["routes"]:
                    route.pop("route", None)  # the catch-all already answers itself
                    route["direct_response"] = {"status": 200, "body": {"inline_string": "ok\n"}}
            if not with_ext_authz:
                manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != EXT_AUTHZ_FILTER]


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of its live children (the workers of `serve --workers N`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(_own_ticks(int(process)) for process in [pid, *children]) / CLOCK_TICKS


def _own_ticks(pid: int) -> int:
    # The fields after the parenthesised command name start at field 3 (state); utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> WrkRun:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> WrkRun:
    total = re.search(r"(\d+) requests in (\S+),", output)
    if total is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkRun(
        requests=int(total[1]),
        seconds=_milliseconds(total[2]) / 1e3,
        rps=float(_field(r"Requests/sec:\s+([\d.]+)", output)),
        p50_ms=_milliseconds(_field(r"(?m)^\s+50%\s+(\S+)$", output)),
        p99_ms=_milliseconds(_field(r"(?m)^\s+99%\s+(\S+)$", output)),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
    )


def _field(pattern: str, output: str) -> str:
    found = re.search(pattern, output)
    if found is None:
        raise BenchError(f"wrk output has no {pattern!r}:\n{output}")
    return found[1]


def _milliseconds(text: str) -> float:
    """wrk's durations: `812.00us`, `2.41ms`, `1.02s`, `1.00m`."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise BenchError(f"wrk printed {text!r} where a duration was expected")
    return float(found[1]) * _UNITS[found[2]]


def start_servicer(variant: Variant, run_dir: Path, certs: DevCerts, stack: ExitStack) -> Servicer:
    if variant.servicer == "none":
        return Servicer([ListenAddress("unix", path=run_dir / "unused.sock")])
    if variant.servicer == "noop":
        address = ListenAddress("unix", path=run_dir / "noop.sock")
        noop = ManagedProcess("noop servicer", [sys.executable, str(NOOP_SERVICER), str(address.path)],
                              run_dir / "noop.log")
        stack.callback(noop.stop)
        noop.wait_until(lambda: grpc_serving(address))
        return Servicer([address], noop.process.pid)
    workers = ("--workers", str(variant.workers)) if variant.workers > 1 else ()
    sections = {}
    if variant.limits:
        backend = "memory://"
        if variant.limits == "redis":
            redis = RedisServer(run_dir / "redis").start()
            stack.callback(redis.stop)
            backend = redis.url
        sections = {"policy": {"path": str(LIMITED_POLICY)}, "rate_limit": {"backend": backend}}
    extauth = ExtauthProcess(run_dir, extauth_config(run_dir, certs, **sections), *workers)
    stack.callback(extauth.stop)
    addresses = [address.for_worker(index, variant.workers)
                 for address in extauth.addresses for index in range(variant.workers)]
    for address in addresses:
        extauth.wait_serving(address)
    return Servicer(addresses, extauth.process.process.pid, extauth.audit_path)


def run_variant(variant: Variant, run_dir: Path, certs: DevCerts, token: str, seconds: int,
                connections: int, profile_dir: Path | None = None) -> Result:
    headers = {"authorization": f"Bearer {token}"} if variant.with_token else {}
    run_dir.mkdir()
    with ExitStack() as stack:
        servicer = start_servicer(variant, run_dir, certs, stack)
        envoy = EnvoyProcess(run_dir, certs, free_port(), servicer.endpoints,
                             edit=partial(serve_directly, with_ext_authz=variant.servicer != "none"))
        stack.callback(envoy.stop)
        probe = envoy.request("GET", variant.path, headers)
        if probe.status != 200:
            raise BenchError(f"({variant.key}) GET {variant.path} answered {probe.status}: {probe.body[:200]!r}")
        url = f"https://localhost:{envoy.port}{variant.path}"
        wrk(url, headers, WARMUP_SECONDS, connections)
        pids = {"envoy": envoy.process.process.pid}
        if servicer.pid is not None:
            pids["servicer"] = servicer.pid
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        profiler = profile(servicer.pid, seconds, profile_dir / variant.key) if profile_dir and servicer.pid else None
        run = wrk(url, headers, seconds, connections)
        if profiler is not None:
            profiler.wait(timeout=30)
        cpu_us = {name: (cpu_seconds(pid) - before[name]) * 1e6 / max(run.requests, 1) for name, pid in pids.items()}
    if run.non_2xx:
        raise BenchError(f"({variant.key}) {run.non_2xx} of {run.requests} responses were not 2xx: "
                         "the figures would measure denials, not the Check path")
    if servicer.audit is not None and not (servicer.audit.exists() and servicer.audit.stat().st_size):
        raise BenchError(f"({variant.key}) extauth wrote no audit events: the run skipped work production does")
    return Result(variant, run, cpu_us.get("servicer"), cpu_us["envoy"])


def profile(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy samples the servicer's Python stacks (without pausing it; idle threads left out) during the measured
    run and writes collapsed stacks to `<output>.txt` (bench/profile_summary.py summarises them; any flame-graph
    tool draws them). Sampling still costs some CPU: compare a profiled run's figures only with profiled ones."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
                             "--nonblocking", "--format", "raw", "--output", f"{output}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def table(results: list[Result]) -> Iterator[str]:
    by_key = {result.variant.key: result for result in results}

    def ratio(result: Result, key: str) -> str:
        return f"{result.run.rps / by_key[key].run.rps:.2f}" if key in by_key else "-"

    yield (f"| {'variant':<42} | {'rps':>7} | {'/b':>5} | {'/a':>5} | {'p50 ms':>6} | {'p99 ms':>6} | "
           f"{'servicer CPU-µs/req':>19} | {'Envoy CPU-µs/req':>16} | {'non-2xx':>7} | {'sock err':>8} |")
    yield f"|{'-' * 44}|{'-' * 9}|{'-' * 7}|{'-' * 7}|{'-' * 8}|{'-' * 8}|{'-' * 21}|{'-' * 18}|{'-' * 9}|{'-' * 10}|"
    for result in results:
        run = result.run
        servicer = f"{result.servicer_cpu_us:.0f}" if result.servicer_cpu_us is not None else "-"
        yield (f"| {result.variant.key}. {result.variant.title:<39} | {run.rps:>7.0f} | {ratio(result, 'b'):>5} | "
               f"{ratio(result, 'a'):>5} | {run.p50_ms:>6.2f} | {run.p99_ms:>6.2f} | {servicer:>19} | "
               f"{result.envoy_cpu_us:>16.0f} | {run.non_2xx:>7} | {run.socket_errors:>8} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per variant (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--only", default=",".join(v.key for v in VARIANTS),
                        help="comma-separated variant keys, e.g. a,b,d (default all)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample each servicer with py-spy during its measured run; collapsed stacks to DIR")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    unknown = chosen - {variant.key for variant in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    with tempfile.TemporaryDirectory(prefix="extauth-bench-") as temp:
        work_dir = Path(temp)
        certs = create_dev_certs(work_dir / "certs")
        token = mint_token(certs.jwt_signing_key, subject="bench-reader", claims={"roles": ["reader"]})
        print(f"{date.today()}  {os.cpu_count()} CPUs  wrk -t1 -c{args.connections} -d{args.duration}s "
              f"(+{WARMUP_SECONDS}s warm-up) over HTTPS, Envoy --concurrency 1, direct_response 200")
        print(f"extauth audit goes to a file, as in production: {work_dir}/<variant>/audit.jsonl\n")
        results = []
        try:
            for variant in VARIANTS:
                if variant.key in chosen:
                    print(f"  running {variant.key}: {variant.title} ...", file=sys.stderr, flush=True)
                    results.append(run_variant(variant, work_dir / variant.key, certs, token, args.duration,
                                               args.connections, args.profile))
        except (BenchError, ProcessError) as error:
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        finally:
            print("\n".join(table(results)))
    print("\n/b, /a: requests/s relative to the no-op servicer and to Envoy alone, from this run. "
          "CPU-µs/req: utime+stime over the measured run / requests completed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
