"""µs per call of each piece of the Check path, in process: no gRPC, no Envoy, one core.

The pieces are the real ones, wired by `ExtauthServer` from the local-stack configuration (dev JWKS file, demo
policy, audit to a file). The CheckRequest has the shape Envoy 1.40 sends through the shipped bootstrap for
`GET /api/orders` with a reader token. Each figure is the best of several batches of at least 0.1 s, so it is
the cost of the code, not of whatever else the machine was doing.
"""

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path

import structlog
import uvloop
import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from extauth import logs
from extauth.audit.events import decision_event
from extauth.audit.writer import AuditWriter, FdOutput
from extauth.clock import SystemClock
from extauth.config import load_config
from extauth.config.schema import TracingConfig
from extauth.devstack.gateway import extauth_config
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.request import Request
from extauth.respond import Responder
from extauth.server import ExtauthServer
from extauth.tracing import CheckTracer

ROUNDS = 5
MIN_BATCH_SECONDS = 0.1
PARSE = "parse the CheckRequest (upb)"
SERIALISE = "serialise the allow CheckResponse (upb)"
JWT_CHECK = "Pipeline.check, JWT route (cache warm)"
TRACED_CHECK = "Pipeline.check, JWT route, tracing {}"
AUDIT_BUILD = "audit: build the decision event"
BEFORE_LINE = "audit before v1: structlog line per event (Check path)"
AUDIT_ENQUEUE = "audit: AuditWriter.emit (enqueue, Check path)"
AUDIT_WRITER = "audit: writer task per event (off the Check path)"
METRICS = "metrics: CheckMetrics.record (Check path)"

Batch = Callable[[int], object]


def envoy_check_request(path: str, token: str | None) -> CheckRequest:
    """What Envoy's ext_authz filter sends for a curl-like HTTPS GET through the shipped bootstrap."""
    check = CheckRequest()
    attributes = check.attributes
    attributes.source.address.socket_address.address = "127.0.0.1"
    attributes.source.address.socket_address.port_value = 49844
    attributes.destination.address.socket_address.address = "127.0.0.1"
    attributes.destination.address.socket_address.port_value = 8443
    attributes.destination.principal = "localhost"
    attributes.request.time.GetCurrentTime()
    http = attributes.request.http
    http.id, http.method, http.path, http.host = "9187988182059673353", "GET", path, "localhost:8443"
    http.scheme, http.protocol = "https", "HTTP/1.1"
    headers = {
        "x-request-id": "e8f7678c-e4e4-474e-a3c0-2165e12960c4", "x-forwarded-proto": "https",
        "x-forwarded-for": "127.0.0.1", "x-envoy-external-address": "127.0.0.1", "user-agent": "curl/8.5.0",
        **({"authorization": f"Bearer {token}"} if token else {}),
        "accept": "*/*", ":scheme": "https", ":path": path, ":method": "GET", ":authority": "localhost:8443",
    }
    http.headers.update(headers)
    attributes.context_extensions.update({"service": "demo", "route": "api" if path.startswith("/api/") else "public"})
    return check


def microseconds_per_call(batch: Batch) -> float:
    """Best of ROUNDS batches, each sized (by doubling) to last at least MIN_BATCH_SECONDS."""
    size = 1
    while _seconds(batch, size) < MIN_BATCH_SECONDS:
        size *= 2
    return min(_seconds(batch, size) for _ in range(ROUNDS)) * 1e6 / size


def _seconds(batch: Batch, size: int) -> float:
    started = time.perf_counter_ns()
    batch(size)
    return (time.perf_counter_ns() - started) / 1e9


def repeated(call: Callable[[], object]) -> Batch:
    def batch(size: int) -> None:
        for _ in range(size):
            call()
    return batch


def repeated_async(call: Callable[[], Awaitable[object]], loop: asyncio.AbstractEventLoop) -> Batch:
    """Awaited back to back inside one task: what is timed is our coroutine, not event-loop scheduling."""
    async def batch(size: int) -> None:
        for _ in range(size):
            await call()
    return lambda size: loop.run_until_complete(batch(size))


def measurements(work_dir: Path, certs: DevCerts, check: CheckRequest,
                 loop: asyncio.AbstractEventLoop) -> Iterator[tuple[str, float]]:
    config_path = work_dir / "extauth.yaml"
    config_path.write_text(yaml.safe_dump(extauth_config(work_dir, certs)))
    config = load_config(config_path)
    # As `extauth serve` does: the audit sink's structlog logger filters at this level too.
    logs.configure(config.logging.level)
    server = ExtauthServer(config, config_path)
    no_cache = Authenticator(config.authentication.model_copy(update={"token_cache_size": 0}), SystemClock())
    responder = Responder(config.authentication.forward)
    pipeline = Pipeline(server.authenticator, server.policy, responder, server.audit, server.instance,
                        redactor=server.audit.redactor)
    for authenticator in (server.authenticator, no_cache):
        loop.run_until_complete(authenticator.start())
    try:
        public_check = envoy_check_request("/public/x", None)
        raw = check.SerializeToString()
        request = Request(check)
        engine = server.policy.current.engine
        principal = loop.run_until_complete(server.authenticator.authenticate(request.headers))
        allow = engine.authorize(request, principal)
        deny = engine.authorize(request, None)
        allowed_response = responder.render(allow, request.request_id)
        if not allow.allowed or deny.status != 401:
            raise RuntimeError(f"unexpected decisions: {allow} / {deny}")

        yield PARSE, microseconds_per_call(repeated(lambda: CheckRequest.FromString(raw)))
        yield "Request(...) view", microseconds_per_call(repeated(lambda: Request(check)))
        yield "authenticate, cache hit", microseconds_per_call(
            repeated_async(lambda: server.authenticator.authenticate(request.headers), loop))
        yield "authenticate, cache miss (RS256 verify)", microseconds_per_call(
            repeated_async(lambda: no_cache.authenticate(request.headers), loop))
        yield "PolicyEngine.authorize (allow)", microseconds_per_call(
            repeated(lambda: engine.authorize(request, principal)))
        yield "Responder.render allow (identity headers)", microseconds_per_call(
            repeated(lambda: responder.render(allow, request.request_id)))
        yield "Responder.render deny (401, JSON body, challenge)", microseconds_per_call(
            repeated(lambda: responder.render(deny, request.request_id)))
        yield SERIALISE, microseconds_per_call(
            repeated(allowed_response.SerializeToString))
        timings = {"screen": 3, "authenticate": 2, "authorize": 1, "respond": 9}
        redactor = server.audit.redactor
        yield AUDIT_BUILD, microseconds_per_call(
            repeated(lambda: decision_event(request, allow, 123, server.instance, timings, redactor)))
        event = decision_event(request, allow, 123, server.instance, timings, redactor)
        yield BEFORE_LINE, microseconds_per_call(repeated(structlog_line_per_event(work_dir / "before.jsonl", event)))
        yield AUDIT_ENQUEUE, microseconds_per_call(enqueue_batch(event, server.instance))
        yield AUDIT_WRITER, microseconds_per_call(writer_batch(work_dir / "audit.jsonl", event, server.instance))
        yield METRICS, microseconds_per_call(repeated(
            lambda: pipeline.metrics.record("allow", "ok", 35, timings)))
        yield JWT_CHECK, microseconds_per_call(
            repeated_async(lambda: pipeline.check(check), loop))
        yield "Pipeline.check, public route", microseconds_per_call(
            repeated_async(lambda: pipeline.check(public_check), loop))
        # Side by side, each on a pipeline of its own built the same way (the audit queue is as full for each).
        for tracing, ratio in (("off", None), ("on, unsampled", 0.0), ("on, sampled", 1.0)):
            tracer = None if ratio is None else CheckTracer(
                TracingConfig(endpoint="http://127.0.0.1:4317", sampling_ratio=ratio), server.instance, Discard())
            traced = Pipeline(server.authenticator, server.policy, responder, server.audit, server.instance,
                              redactor=server.audit.redactor, tracer=tracer)
            yield TRACED_CHECK.format(tracing), microseconds_per_call(
                repeated_async(lambda traced=traced: traced.check(check), loop))
    finally:
        for authenticator in (server.authenticator, no_cache):
            loop.run_until_complete(authenticator.stop())
        server.audit.output.close()


class Discard(SpanExporter):
    """Spans handed over and dropped: what a sampled Check costs on its own path, not the export."""

    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def structlog_line_per_event(path: Path, event: dict[str, object]) -> Callable[[], None]:
    """The audit sink before schema v1, for comparison: a structlog logger rendering and writing one line per
    event on the Check path (ISO timestamp, JSON, line-buffered file)."""
    stream = path.open("a", encoding="utf-8", buffering=1)
    logger = structlog.wrap_logger(structlog.WriteLogger(stream), wrapper_class=structlog.BoundLogger, processors=[
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.JSONRenderer(separators=(",", ":"))])
    fields = {key: value for key, value in event.items() if key not in ("event", "ts")}
    return lambda: logger.msg("decision", **fields)


def enqueue_batch(event: dict[str, object], instance: str) -> Batch:
    """`AuditWriter.emit` as the Check path calls it; the queue is emptied between batches (not timed)."""
    writer = AuditWriter(FdOutput(-1, owns=False, name="unused"), instance=instance, queue_size=10_000_000)

    def batch(size: int) -> None:
        for _ in range(size):
            writer.emit(event)
        writer.queue.take(size)
    return batch


def writer_batch(path: Path, event: dict[str, object], instance: str) -> Batch:
    """What the writer task spends per event, off the Check path: redaction, timestamp, JSON, hash chain, and
    one `write` per batch of up to 1,024 events. Includes copying the event (the processors change it)."""
    output = FdOutput.open(path)
    writer = AuditWriter(output, instance=instance, queue_size=10_000_000)

    def batch(size: int) -> None:
        for _ in range(size):
            writer.emit(dict(event))
        while writer.depth:
            output.write(writer._render_batch())
    return batch


def main() -> int:
    loop = uvloop.new_event_loop()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="extauth-micro-") as temp:
        work_dir = Path(temp)
        certs = create_dev_certs(work_dir / "certs")
        token = mint_token(certs.jwt_signing_key, subject="bench-reader", claims={"roles": ["reader"]})
        check = envoy_check_request("/api/orders", token)
        print(f"{date.today()}  Python {sys.version.split()[0]}  best of {ROUNDS} batches >= {MIN_BATCH_SECONDS}s; "
              f"audit to a file: {work_dir}/audit.jsonl")
        print(f"CheckRequest: GET /api/orders with a reader token, {check.ByteSize()} bytes\n")
        print(f"| {'piece':<50} | {'µs/call':>8} |\n|{'-' * 52}|{'-' * 10}|")
        for name, microseconds in measurements(work_dir, certs, check, loop):
            results[name] = microseconds
            print(f"| {name:<50} | {microseconds:>8.1f} |", flush=True)
        if not (work_dir / "audit.jsonl").stat().st_size:
            raise RuntimeError("no audit event reached the file: the audit figures measured nothing")
    loop.close()
    ours = results[PARSE] + results[JWT_CHECK] + results[SERIALISE]
    print(f"\nOur share of one JWT Check (parse + Pipeline.check + serialise): {ours:.0f} µs")
    before = results[AUDIT_BUILD] + results[BEFORE_LINE]
    on_path = results[AUDIT_BUILD] + results[AUDIT_ENQUEUE] + results[METRICS]
    print(f"Audit per Check, before v1 (build + structlog line, all on the Check path): {before:.1f} µs")
    print(f"Audit per Check, now: on the Check path (build + enqueue + metrics) {on_path:.1f} µs; "
          f"CPU in total (+ writer task) {on_path + results[AUDIT_WRITER]:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
