"""Throughput and latency of the gateway with and without ext_authz, side by side in one run (`make bench`).

Every variant runs the shipped Envoy bootstrap (rendered onto free ports, `--concurrency 1`) with each route
answering 200 itself (`direct_response`, context_extensions kept), so no Python upstream limits throughput. It is
loaded twice over HTTPS: `wrk -t1 -cN --latency` (closed loop: the capacity), then `h2load --rps` at a fixed
offered rate, half of b's capacity (open loop: latency percentiles free of coordinated omission). On a machine
where Envoy, the load generator and the servicer share few cores, absolute requests/s mean little: compare the
ratios and the CPU-µs per request. `--json FILE` writes the figures for comparing machines and commits.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from native_filters import use_native_filters

from extauth.config.schema import AuthenticationConfig, ListenAddress
from extauth.devstack.envoy import Node, connection_managers
from extauth.devstack.gateway import DEMO_POLICIES, EnvoyProcess, ExtauthProcess, extauth_config, free_port
from extauth.devstack.processes import ManagedProcess, ProcessError, grpc_serving
from extauth.devstack.redis import RedisServer, redis_command
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_tokens

NOOP_SERVICER = Path(__file__).with_name("noop_authz.py")
POLICIES = Path(__file__).parent / "policies"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
WARMUP_SECONDS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
#: h2load's rate timer ticks every max(10 ms, 1/rate-per-client) and sends what fell due since the last tick:
#: at most 100 requests/s per client keeps that to one request per tick, spread, not bursts every 10 ms.
MAX_RPS_PER_CLIENT = 100
#: Streams each client may keep open: enough that a slow answer never holds back the next scheduled request
#: (which would make the run closed-loop again).
FIXED_RATE_STREAMS = 64
#: Variant h cycles through more distinct tokens than the verification cache holds: with an LRU, a cycle
#: longer than the capacity misses on every request.
UNIQUE_TOKENS = AuthenticationConfig.model_fields["token_cache_size"].default * 11 // 10
#: What Envoy answers when a Check times out or extauth is unavailable (`status_on_error`): at a fixed rate
#: above a variant's capacity that is overload, reported in the latency table, not a reason to stop.
OVERLOADED = 503
#: commandstats names of the commands that run a script: EVAL, EVALSHA, FCALL and their `_ro` forms.
SCRIPT_COMMAND_PREFIXES = ("eval", "fcall")
#: The ratios the issue's targets are stated in (numerator/denominator variant keys).
RATIOS = (("d", "b"), ("g", "b"), ("l", "b"), ("d", "n"), ("g", "n"))


class BenchError(RuntimeError):
    """A variant produced results that would make its figures meaningless (non-2xx answers, a failed probe)."""


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    #: "none" removes the ext_authz filter; "noop" is bench/noop_authz.py; "extauth" is `extauth serve`;
    #: "native" replaces ext_authz with Envoy's jwt_authn + rbac + local_ratelimit (bench/native_filters.py).
    servicer: str
    path: str
    with_token: bool
    workers: int = 1
    #: None: the demo policy, no limits. Otherwise `<backend>[-<policy>]` (see `limits_of`).
    limits: str | None = None
    #: A different token on every request (verification cache misses) instead of one reused token.
    unique_tokens: bool = False
    #: The demo policies' WAF (envoy/policies/waf.yaml, CRS PL1) in this mode; None: without it (docs/waf.md).
    waf: str | None = None


# a, b, d-h and n send the same request (JWT path with a token), so their ratios compare like with like.
VARIANTS = (
    Variant("a", "Envoy alone, ext_authz filter removed", "none", "/api/orders", with_token=True),
    Variant("b", "ext_authz -> no-op Python servicer", "noop", "/api/orders", with_token=True),
    Variant("c", "ext_authz -> extauth, public route", "extauth", "/public/x", with_token=False),
    Variant("d", "ext_authz -> extauth, JWT (cache warm)", "extauth", "/api/orders", with_token=True),
    Variant("e", "same as d, extauth --workers 2", "extauth", "/api/orders", with_token=True, workers=2),
    Variant("f", "same as d + 2 limit windows in process", "extauth", "/api/orders", with_token=True,
            limits="memory"),
    Variant("g", "same as d + 2 limit windows in Redis", "extauth", "/api/orders", with_token=True,
            limits="redis"),
    Variant("h", "same as g, a new token per request", "extauth", "/api/orders", with_token=True,
            limits="redis", unique_tokens=True),
    Variant("l", "same as g, both windows in leased mode", "extauth", "/api/orders", with_token=True,
            limits="redis-leased"),
    Variant("n", "Envoy jwt_authn + rbac + local_ratelimit", "native", "/api/orders", with_token=True),
    Variant("w", "same as d + WAF (CRS PL1), benign request", "extauth", "/api/orders", with_token=True, waf="block"),
    Variant("x", "same as w, SQLi in the query, detect mode", "extauth", "/api/orders?id=1%27%20OR%201%3D1--",
            with_token=True, waf="detect"),
)


@dataclass(frozen=True)
class Limits:
    policy: Path
    redis: bool


def limits_of(name: str) -> Limits:
    """`memory` / `redis`: bench/policies/limited.yaml (two windows per request, never exceeded) counted in
    process or in a local redis-server; `<backend>-<policy>` counts bench/policies/<policy>.yaml instead
    (`redis-leased`: leased.yaml), so a new rate-limit mode is one Variant and one policy file."""
    backend, _, policy = name.partition("-")
    if backend not in ("memory", "redis"):
        raise ValueError(f"limits {name!r}: the backend must be memory or redis")
    return Limits(POLICIES / f"{policy or 'limited'}.yaml", redis=backend == "redis")


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
class LatencyRun:
    """One fixed-rate run: what was offered, what completed, and the latency percentiles of what completed."""

    offered_rps: float
    achieved_rps: float
    requests: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    #: How many of each non-2xx status (-1: a failed stream), to say what went wrong when non_2xx is not 0.
    failures: Mapping[int, int] = field(default_factory=dict)
    #: The servicer's CPU-µs per completed request during this run. At the same offered rate every variant sees
    #: the same arrivals, so this compares the work per Check without the capacity run's overload, where the
    #: servicer, Envoy and the load generator preempt each other on the shared cores.
    servicer_cpu_us: float | None = None


@dataclass(frozen=True)
class Servicer:
    #: One per worker, each listed as an Envoy endpoint.
    endpoints: list[ListenAddress]
    #: The process whose CPU (with its children's) is charged to the servicer; None without ext_authz.
    pid: int | None = None
    audit: Path | None = None
    #: The redis-server counting the limits: its command statistics give Redis calls per Check, its CPU the
    #: Redis share of a Check.
    redis: RedisServer | None = None


@dataclass(frozen=True)
class Result:
    variant: Variant
    run: WrkRun
    servicer_cpu_us: float | None
    envoy_cpu_us: float
    redis_calls_per_check: float | None = None
    latency: LatencyRun | None = None
    redis_cpu_us: float | None = None


@dataclass(frozen=True)
class Load:
    """What each request carries: one header set, or (variant h) a wrk script rotating tokens."""

    headers: dict[str, str]
    script: Path | None = None


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


def bootstrap_edit(variant: Variant, certs: DevCerts) -> Callable[[Node], None]:
    """How variant's Envoy differs from the shipped one: routes answer themselves, and the filter chain."""

    def edit(bootstrap: Node) -> None:
        serve_directly(bootstrap, with_ext_authz=variant.servicer != "none")
        if variant.servicer == "native":
            use_native_filters(bootstrap, certs.jwks)

    return edit


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of its live children (the workers of `serve --workers N`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(_own_ticks(int(process)) for process in [pid, *children]) / CLOCK_TICKS


def _own_ticks(pid: int) -> int:
    # The fields after the parenthesised command name start at field 3 (state); utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def wrk(url: str, load: Load, seconds: int, connections: int) -> WrkRun:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in load.headers.items():
        command += ["-H", f"{name}: {value}"]
    if load.script is not None:
        command += ["-s", str(load.script)]
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


def rotating_tokens_script(tokens: list[str], path: Path) -> Path:
    """A wrk script sending `tokens` in turn, one per request (wrk -t1: one Lua state, so a strict cycle)."""
    entries = "".join(f"  {json.dumps('Bearer ' + token)},\n" for token in tokens)
    path.write_text(
        f"local tokens = {{\n{entries}}}\n"
        "local last = 0\n"
        "request = function()\n"
        "  last = last % #tokens + 1\n"
        '  return wrk.format(nil, nil, {["authorization"] = tokens[last]})\n'
        "end\n")
    return path


def fixed_rate_clients(rate: float) -> int:
    return max(1, math.ceil(rate / MAX_RPS_PER_CLIENT))


def h2load(url: str, headers: Mapping[str, str], rate: float, seconds: int, log_file: Path) -> LatencyRun:
    """`rate` requests/s spread over HTTP/2 connections of at most MAX_RPS_PER_CLIENT each, for `seconds`."""
    clients = fixed_rate_clients(rate)
    command = ["h2load", f"--clients={clients}", f"--max-concurrent-streams={FIXED_RATE_STREAMS}",
               f"--rps={rate / clients:.2f}", f"--duration={seconds}", f"--log-file={log_file}", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=seconds + 30)
    return parse_h2load_log(log_file.read_text(), rate, seconds)


def parse_h2load_log(text: str, offered_rps: float, seconds: float) -> LatencyRun:
    """h2load's `--log-file`: one tab-separated row per request (start µs since epoch, status or -1 for a
    failed stream, µs until the end of the response)."""
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not rows:
        raise BenchError("h2load completed no requests")
    statuses = [int(row[1]) for row in rows]
    durations_ms = sorted(int(row[2]) / 1e3 for row in rows)
    return LatencyRun(
        offered_rps=offered_rps,
        achieved_rps=len(rows) / seconds,
        requests=len(rows),
        non_2xx=sum(1 for status in statuses if not 200 <= status < 300),
        failures=Counter(status for status in statuses if not 200 <= status < 300),
        p50_ms=percentile(durations_ms, 0.50),
        p99_ms=percentile(durations_ms, 0.99),
        p999_ms=percentile(durations_ms, 0.999),
    )


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def parse_commandstats(reply: str) -> dict[str, int]:
    """`INFO commandstats` → calls per command (`cmdstat_evalsha:calls=12,usec=…` → {"evalsha": 12})."""
    return {found[1]: int(found[2]) for found in re.finditer(r"(?m)^cmdstat_([^:]+):calls=(\d+)", reply)}


def redis_calls(port: int) -> dict[str, int]:
    return parse_commandstats(redis_command(port, "INFO", "commandstats").decode())


def script_calls_between(before: Mapping[str, int], after: Mapping[str, int]) -> int:
    """Script calls (EVALSHA, EVAL, FCALL and their _ro forms) between two snapshots: the round trips the
    rate-limit phase makes. commandstats also counts the GET/SET a script runs inside Redis, so counting every
    command would overstate the round trips."""
    return sum(count - before.get(command, 0) for command, count in after.items()
               if command.startswith(SCRIPT_COMMAND_PREFIXES))


def start_servicer(variant: Variant, run_dir: Path, certs: DevCerts, stack: ExitStack) -> Servicer:
    if variant.servicer in ("none", "native"):
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
    redis = None
    if variant.limits:
        limits = limits_of(variant.limits)
        backend = "memory://"
        if limits.redis:
            redis = RedisServer(run_dir / "redis").start()
            stack.callback(redis.stop)
            backend = redis.url
        sections = {"policy": {"path": str(limits.policy)}, "rate_limit": {"backend": backend}}
    else:
        sections = {"policy": {"path": str(demo_policies(variant.waf, run_dir / "policies"))}}
    extauth = ExtauthProcess(run_dir, extauth_config(run_dir, certs, **sections), *workers)
    stack.callback(extauth.stop)
    addresses = [address.for_worker(index, variant.workers)
                 for address in extauth.addresses for index in range(variant.workers)]
    for address in addresses:
        extauth.wait_serving(address)
    return Servicer(addresses, extauth.process.process.pid, extauth.audit_path, redis)


def demo_policies(waf_mode: str | None, directory: Path) -> Path:
    """The demo policies with their WAF in `waf_mode` (block, detect), or without it (None)."""
    shutil.copytree(DEMO_POLICIES, directory, ignore=shutil.ignore_patterns("tests"))
    waf = directory / "waf.yaml"
    if waf_mode is None:
        waf.unlink()
    else:
        waf.write_text(waf.read_text().replace("mode: block", f"mode: {waf_mode}"))
    return directory


def run_variant(variant: Variant, run_dir: Path, certs: DevCerts, load: Load, seconds: int, connections: int,
                fixed_rate: Callable[[WrkRun], float | None], profile_dir: Path | None = None) -> Result:
    """Capacity (wrk) with CPU and Redis calls per request, then latency at the rate `fixed_rate` derives from
    that capacity run (None: no latency run); with `profile_dir`, py-spy samples the servicer during the
    capacity run."""
    run_dir.mkdir()
    with ExitStack() as stack:
        servicer = start_servicer(variant, run_dir, certs, stack)
        envoy = EnvoyProcess(run_dir, certs, free_port(), servicer.endpoints, edit=bootstrap_edit(variant, certs))
        stack.callback(envoy.stop)
        probe = envoy.request("GET", variant.path, load.headers)
        if probe.status != 200:
            raise BenchError(f"({variant.key}) GET {variant.path} answered {probe.status}: {probe.body[:200]!r}")
        url = f"https://localhost:{envoy.port}{variant.path}"
        wrk(url, load, WARMUP_SECONDS, connections)
        pids = {"envoy": envoy.process.process.pid}
        if servicer.pid is not None:
            pids["servicer"] = servicer.pid
        if servicer.redis is not None and servicer.redis.process is not None:
            pids["redis"] = servicer.redis.process.process.pid
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        redis_before = redis_calls(servicer.redis.port) if servicer.redis is not None else {}
        profiler = profile(servicer.pid, seconds, profile_dir / variant.key) if profile_dir and servicer.pid else None
        run = wrk(url, load, seconds, connections)
        if profiler is not None:
            profiler.wait(timeout=30)
        cpu_us = {name: (cpu_seconds(pid) - before[name]) * 1e6 / max(run.requests, 1) for name, pid in pids.items()}
        calls_per_check = None
        if servicer.redis is not None:
            calls = script_calls_between(redis_before, redis_calls(servicer.redis.port))
            calls_per_check = calls / max(run.requests, 1)
        latency = None
        rate = fixed_rate(run)
        # h2load sends one header set, so it cannot rotate tokens: h's fixed-rate run would be g's cache hits.
        if rate and load.script is None:
            started = cpu_seconds(servicer.pid) if servicer.pid is not None else None
            latency = h2load(url, load.headers, rate, seconds, run_dir / "h2load.log")
            if started is not None and servicer.pid is not None:
                spent_us = (cpu_seconds(servicer.pid) - started) * 1e6
                latency = replace(latency, servicer_cpu_us=spent_us / max(latency.requests, 1))
    refuse_denials(variant.key, run, latency)
    if servicer.audit is not None and not (servicer.audit.exists() and servicer.audit.stat().st_size):
        raise BenchError(f"({variant.key}) extauth wrote no audit events: the run skipped work production does")
    return Result(variant, run, cpu_us.get("servicer"), cpu_us["envoy"], calls_per_check, latency,
                  cpu_us.get("redis"))


def refuse_denials(key: str, run: WrkRun, latency: LatencyRun | None) -> None:
    """A BenchError if the figures would measure denials, not the Check path: any non-2xx in the capacity run,
    or in the fixed-rate run anything but OVERLOADED (reported there: the rate was beyond the variant)."""
    if run.non_2xx:
        raise BenchError(f"({key}) {run.non_2xx} of {run.requests} responses were not 2xx: "
                         "the figures would measure denials, not the Check path")
    if latency is not None and set(latency.failures) - {OVERLOADED}:
        raise BenchError(f"({key}) the fixed-rate run had non-2xx answers other than {OVERLOADED} "
                         f"(status: count {dict(latency.failures)}): they would measure denials")


def half_of_b(override: float | None, variant: Variant, results: Mapping[str, Result], run: WrkRun) -> float | None:
    """The fixed rate for `variant`'s latency run: `override`, else half of b's capacity (b's own run is the one
    just measured), else None when b is not part of this run."""
    if override:
        return override
    base = run if variant.key == "b" else results["b"].run if "b" in results else None
    return base.rps / 2 if base is not None else None


def median_run(runs: list[Result]) -> Result:
    """The run with the median requests/s (the lower middle one of an even count): one real run, so its
    figures (CPU, latency, Redis calls) belong together."""
    return sorted(runs, key=lambda result: result.run.rps)[(len(runs) - 1) // 2]


def spread_lines(runs: Mapping[str, list[Result]]) -> Iterator[str]:
    for key, results in runs.items():
        figures = ", ".join(f"{result.run.rps:.0f} rps / {_whole(result.servicer_cpu_us)} µs" for result in results)
        yield f"  {key}: {figures}"


def ratios(rps: Mapping[str, float]) -> dict[str, float]:
    """The issue's throughput ratios, each present only when both of its variants ran."""
    return {f"{top}/{bottom}": round(rps[top] / rps[bottom], 3)
            for top, bottom in RATIOS if top in rps and bottom in rps}


def report(results: Iterable[Result], when: datetime, machine: str,
           runs: Mapping[str, list[Result]] | None = None) -> dict[str, Any]:
    """The `--json` document: the issue's per-variant fields, then Redis calls per Check and the fixed-rate
    latencies where the variant has them; with `runs` (--rounds), every run's rps and servicer CPU beside the
    median run's figures."""
    variants: dict[str, dict[str, Any]] = {}
    for result in results:
        figures: dict[str, Any] = {
            "rps": round(result.run.rps, 1),
            "p50_ms": result.run.p50_ms,
            "p99_ms": result.run.p99_ms,
            "servicer_cpu_us": _rounded(result.servicer_cpu_us),
            "envoy_cpu_us": round(result.envoy_cpu_us, 1),
            "non_2xx": result.run.non_2xx,
        }
        if result.redis_calls_per_check is not None:
            figures["redis_calls_per_check"] = round(result.redis_calls_per_check, 4)
            figures["redis_cpu_us"] = _rounded(result.redis_cpu_us)
        if result.latency is not None:
            figures["fixed_rate"] = {"offered_rps": round(result.latency.offered_rps, 1),
                                     "achieved_rps": round(result.latency.achieved_rps, 1),
                                     "p50_ms": result.latency.p50_ms, "p99_ms": result.latency.p99_ms,
                                     "p99_9_ms": result.latency.p999_ms, "non_2xx": result.latency.non_2xx,
                                     "servicer_cpu_us": _rounded(result.latency.servicer_cpu_us)}
        if runs is not None:
            figures["runs"] = [{"rps": round(run.run.rps, 1), "servicer_cpu_us": _rounded(run.servicer_cpu_us)}
                               for run in runs[result.variant.key]]
        variants[result.variant.key] = figures
    return {"date": when.isoformat(timespec="seconds"), "machine": machine, "variants": variants,
            "ratios": ratios({key: figures["rps"] for key, figures in variants.items()})}


def _whole(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def machine_description() -> str:
    """CPU count and model, kernel and Python: enough to tell two machines' figures apart."""
    model = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def profile(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy samples the servicer's Python stacks (without pausing it; idle threads left out) during the measured
    run and writes collapsed stacks to `<output>.txt` (bench/profile_summary.py summarises them; any flame-graph
    tool draws them). Sampling still costs some CPU: compare a profiled run's figures only with profiled ones."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # The dev extra installs py-spy beside this interpreter, which need not be on PATH (`.venv/bin/python bench/...`).
    beside = Path(sys.executable).with_name("py-spy")
    py_spy = str(beside) if beside.exists() else "py-spy"
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
                             "--nonblocking", "--format", "raw", "--output", f"{output}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def throughput_table(results: list[Result]) -> Iterator[str]:
    by_key = {result.variant.key: result for result in results}

    def ratio(result: Result, key: str) -> str:
        return f"{result.run.rps / by_key[key].run.rps:.2f}" if key in by_key else "-"

    yield (f"| {'variant':<44} | {'rps':>7} | {'/b':>5} | {'/n':>5} | {'/a':>5} | {'p50 ms':>6} | {'p99 ms':>6} | "
           f"{'servicer CPU-µs/req':>19} | {'Envoy CPU-µs/req':>16} | {'Redis calls/req':>15} | "
           f"{'Redis CPU-µs/req':>16} | "
           f"{'non-2xx':>7} | {'sock err':>8} |")
    yield (f"|{'-' * 46}|{'-' * 8}:|{'-' * 6}:|{'-' * 6}:|{'-' * 6}:|{'-' * 7}:|{'-' * 7}:|{'-' * 20}:|"
           f"{'-' * 17}:|{'-' * 16}:|{'-' * 17}:|{'-' * 8}:|{'-' * 9}:|")
    for result in results:
        run = result.run
        servicer = _whole(result.servicer_cpu_us)
        redis = f"{result.redis_calls_per_check:.3f}" if result.redis_calls_per_check is not None else "-"
        redis_cpu = f"{result.redis_cpu_us:.0f}" if result.redis_cpu_us is not None else "-"
        yield (f"| {result.variant.key}. {result.variant.title:<41} | {run.rps:>7.0f} | {ratio(result, 'b'):>5} | "
               f"{ratio(result, 'n'):>5} | {ratio(result, 'a'):>5} | {run.p50_ms:>6.2f} | {run.p99_ms:>6.2f} | "
               f"{servicer:>19} | {result.envoy_cpu_us:>16.0f} | {redis:>15} | {redis_cpu:>16} | {run.non_2xx:>7} | "
               f"{run.socket_errors:>8} |")


def latency_table(results: list[Result]) -> Iterator[str]:
    base = next((r.latency for r in results if r.variant.key == "b" and r.latency is not None), None)
    yield (f"| {'variant':<44} | {'offered rps':>11} | {'achieved rps':>12} | {'p50 ms':>6} | {'p99 ms':>6} | "
           f"{'p99.9 ms':>8} | {'p99 - b p99 ms':>14} | {'503s':>6} | {'servicer CPU-µs/req':>19} |")
    yield f"|{'-' * 46}|{'-' * 12}:|{'-' * 13}:|{'-' * 7}:|{'-' * 7}:|{'-' * 9}:|{'-' * 15}:|{'-' * 7}:|{'-' * 20}:|"
    for result in results:
        latency = result.latency
        name = f"{result.variant.key}. {result.variant.title}"
        if latency is None:
            yield (f"| {name:<44} | {'-':>11} | {'-':>12} | {'-':>6} | {'-':>6} | {'-':>8} | {'-':>14} | {'-':>6} | "
                   f"{'-':>19} |")
            continue
        added = f"{latency.p99_ms - base.p99_ms:+.2f}" if base is not None else "-"
        yield (f"| {name:<44} | {latency.offered_rps:>11.0f} | {latency.achieved_rps:>12.0f} | "
               f"{latency.p50_ms:>6.2f} | {latency.p99_ms:>6.2f} | {latency.p999_ms:>8.2f} | {added:>14} | "
               f"{latency.non_2xx:>6} | {_whole(latency.servicer_cpu_us):>19} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds measured per variant, by wrk and again by h2load (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--only", default=",".join(v.key for v in VARIANTS),
                        help="comma-separated variant keys, e.g. a,b,d (default all)")
    parser.add_argument("--fixed-rate", type=float, metavar="RPS",
                        help="requests/s offered in the latency run (default: half of b's measured capacity; "
                             "without b and without this option there is no latency run)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every variant this many times, in rotation, and report each variant's median "
                             "run by requests/s (default 1); one run's ratios swing by ~10%% on a shared machine")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample each servicer with py-spy during its measured run; collapsed stacks to DIR")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    unknown = chosen - {variant.key for variant in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    # b runs first: its capacity sets the rate every variant's latency run is offered.
    order = sorted((variant for variant in VARIANTS if variant.key in chosen), key=lambda v: v.key != "b")

    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="extauth-bench-") as temp:
        work_dir = Path(temp)
        certs = create_dev_certs(work_dir / "certs")
        unique = any(variant.unique_tokens for variant in order)
        tokens = mint_tokens(certs.jwt_signing_key, UNIQUE_TOKENS if unique else 1, subject="bench-reader",
                             claims={"roles": ["reader"]})
        rotating = rotating_tokens_script(tokens, work_dir / "tokens.lua") if unique else None
        print(f"{started:%Y-%m-%d %H:%M} UTC  {machine_description()}\n"
              f"capacity: wrk -t1 -c{args.connections} -d{args.duration}s (+{WARMUP_SECONDS}s warm-up), HTTP/1.1; "
              f"latency: h2load at a fixed rate, <= {MAX_RPS_PER_CLIENT} rps per HTTP/2 connection, "
              f"{FIXED_RATE_STREAMS} streams each, {args.duration}s; HTTPS, Envoy --concurrency 1, direct_response 200")
        print(f"extauth audit goes to a file, as in production: {work_dir}/<variant>/audit.jsonl\n")
        results: dict[str, Result] = {}  # each variant's latest run: b's sets the next fixed rate
        runs: dict[str, list[Result]] = {}
        try:
            for round_number in range(1, args.rounds + 1):
                for variant in order:
                    load = Load({"authorization": f"Bearer {tokens[0]}"} if variant.with_token else {},
                                rotating if variant.unique_tokens else None)
                    print(f"  running {variant.key}: {variant.title} (round {round_number}/{args.rounds}) ...",
                          file=sys.stderr, flush=True)
                    run_dir = work_dir / (variant.key if args.rounds == 1 else f"{variant.key}.{round_number}")
                    results[variant.key] = run_variant(variant, run_dir, certs, load, args.duration, args.connections,
                                                       partial(half_of_b, args.fixed_rate, variant, results),
                                                       args.profile)
                    runs.setdefault(variant.key, []).append(results[variant.key])
        except (BenchError, ProcessError) as error:
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        finally:
            ordered = [median_run(runs[variant.key]) for variant in VARIANTS if variant.key in runs]
            print("\n".join(throughput_table(ordered)))
            print("\nFixed-rate latency (h2load, open loop):")
            print("\n".join(latency_table(ordered)))
            if args.rounds > 1:
                print(f"\nEach row is the variant's median of {args.rounds} runs by requests/s; all runs' rps and "
                      "servicer CPU-µs/req:")
                print("\n".join(spread_lines(runs)))
    print("\n/b, /n, /a: requests/s relative to the no-op servicer, to Envoy's native filters and to Envoy alone, "
          "from this run.\nCPU-µs/req: utime+stime over the measured run / requests completed.\nRedis calls/req: "
          "script calls (EVALSHA; INFO commandstats) / requests completed; its inverse is the batch size.\n"
          "h has no fixed-rate run: h2load sends one header set, so it cannot rotate tokens.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = report(ordered, started, machine_description(), runs if args.rounds > 1 else None)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nratios: {json.dumps(document['ratios'])}\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
