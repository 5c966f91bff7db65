"""OpenTelemetry spans of a Check: one per phase under the Check's span, parented and sampled by the caller's
`traceparent` (gRPC metadata), never by the client's, and never carrying credential material (docs/tracing.md)."""

import asyncio
import string
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from google.rpc import code_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.checks import check_request

from extauth.audit.sink import MemorySink
from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.config.schema import AuthenticationConfig, TracingConfig
from extauth.devstack.stack import create_empty_key_store
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.respond import Responder
from extauth.tracing import CHECK_SPAN, CheckTracer

DEMO_POLICIES = Path(__file__).parents[3] / "envoy" / "policies"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def reader_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})


class Traced:
    """A pipeline on the demo policies (JWTs and API keys) whose spans go to an in-memory exporter."""

    def __init__(self, certs: DevCerts, loop: asyncio.AbstractEventLoop, sampling_ratio: float = 1.0) -> None:
        key_store = certs.jwks.parent / "apikeys.yaml"
        create_empty_key_store(key_store)
        authentication = AuthenticationConfig.model_validate({
            "providers": [{"name": "dev", "issuer": DEV_ISSUER, "audiences": [DEV_AUDIENCE],
                           "jwks": {"file": str(certs.jwks)}, "primary": True}],
            "api_keys": {"store": str(key_store), "watch": False}})
        self.loop = loop
        self.authenticator = Authenticator(authentication, SystemClock())
        loop.run_until_complete(self.authenticator.start())
        self.exporter = InMemorySpanExporter()
        tracer = CheckTracer(TracingConfig(endpoint="http://collector.invalid:4317", sampling_ratio=sampling_ratio),
                             "test/0", self.exporter)
        self.sink = MemorySink()
        self.policy = PolicyStore(DEMO_POLICIES, SystemClock())
        self.pipeline = Pipeline(self.authenticator, self.policy, Responder(authentication.forward), self.sink,
                                 "test/0", tracer=tracer)

    def spans(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
              metadata: dict[str, str] | None = None) -> dict[str, ReadableSpan]:
        """The spans one Check (called with gRPC `metadata`) exported, by name, in the order they ended."""
        self.exporter.clear()
        check = check_request(path, method, headers=headers or {})
        self.loop.run_until_complete(self.pipeline.check(check, metadata))
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def close(self) -> None:
        self.loop.run_until_complete(self.authenticator.stop())


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for the module (hypothesis drives synchronous tests)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def traced(certs: DevCerts, loop: asyncio.AbstractEventLoop) -> Iterator[Traced]:
    traced = Traced(certs, loop)
    yield traced
    traced.close()


@pytest.fixture
def traced_at(certs: DevCerts, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[float], Traced]]:
    """A pipeline traced at a given sampling ratio."""
    made: list[Traced] = []

    def make(ratio: float) -> Traced:
        made.append(Traced(certs, loop, ratio))
        return made[-1]
    yield make
    for traced in made:
        traced.close()


def traceparent(flags: str = "01") -> dict[str, str]:
    return {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-{flags}"}


def test_a_check_is_one_server_span_with_a_child_span_per_phase(traced: Traced, reader_token: str) -> None:
    """An allowed Check exports `extauth.check` and inside it, in order, one span per phase it ran."""
    spans = traced.spans("/api/orders", {"authorization": f"Bearer {reader_token}"})
    check = spans.pop(CHECK_SPAN)
    assert list(spans) == ["extauth.screen", "extauth.authenticate", "extauth.authorize", "extauth.waf",
                           "extauth.rate_limit", "extauth.respond"]
    assert check.kind is SpanKind.SERVER
    assert check.attributes["extauth.decision"] == "allow"
    assert check.attributes["extauth.request_id"] == traced.sink.events[-1]["request_id"]
    assert check.attributes["extauth.rule"] == "demo/api/readers-may-read"
    assert check.resource.attributes["service.name"] == "extauth"
    previous_end = check.start_time
    for phase in spans.values():
        assert phase.parent.span_id == check.context.span_id
        assert phase.context.trace_id == check.context.trace_id
        assert previous_end <= phase.start_time <= phase.end_time <= check.end_time
        previous_end = phase.end_time


def test_a_denied_check_has_no_rate_limit_span(traced: Traced, reader_token: str) -> None:
    """A deny ends before rate limiting: its spans are the phases that ran, and the decision is on the Check span."""
    spans = traced.spans("/admin/users", {"authorization": f"Bearer {reader_token}"})
    assert list(spans) == ["extauth.screen", "extauth.authenticate", "extauth.authorize", "extauth.respond",
                           CHECK_SPAN]
    assert (spans[CHECK_SPAN].attributes["extauth.decision"], spans[CHECK_SPAN].attributes["extauth.status"]) == (
        "deny", 403)


def test_the_parent_is_the_callers_traceparent(traced_at: Callable[[float], Traced]) -> None:
    """With a sampled `traceparent` in the Check's metadata, the Check span joins that trace as a child of that
    span, whatever the ratio."""
    check = traced_at(0.0).spans("/api/orders", metadata=traceparent("01"))[CHECK_SPAN]
    assert check.context.trace_id == int(TRACE_ID, 16)
    assert check.parent.span_id == int(PARENT_SPAN_ID, 16) and check.parent.is_remote
    assert check.attributes["extauth.reason"] == "missing_token"


def test_an_unsampled_parent_exports_nothing(traced_at: Callable[[float], Traced]) -> None:
    """The parent's sampled flag decides: `-00` exports no span even with a sampling ratio of 1."""
    traced = traced_at(1.0)
    assert traced.spans("/public/x", metadata=traceparent("00")) == {}
    assert len(traced.sink.events) == 1  # the audit is unaffected


@pytest.mark.parametrize("spelling", ["traceparent", "Traceparent", "TRACEPARENT"])
def test_a_client_sent_traceparent_neither_parents_nor_samples(traced_at: Callable[[float], Traced],
                                                               spelling: str) -> None:
    """A `traceparent` among the HTTP request's headers is the client's: it cannot force a trace (ratio 0 stays 0)
    nor make itself the parent (ratio 1: a trace of our own)."""
    client = {spelling: traceparent("01")["traceparent"]}
    assert traced_at(0.0).spans("/public/x", client) == {}
    check = traced_at(1.0).spans("/public/x", client)[CHECK_SPAN]
    assert check.context.trace_id != int(TRACE_ID, 16) and check.parent is None


@pytest.mark.parametrize(("ratio", "exported"), [(0.0, False), (1.0, True)])
def test_without_a_parent_the_sampling_ratio_decides(traced_at: Callable[[float], Traced], ratio: float,
                                                      exported: bool) -> None:
    """A request without `traceparent` is traced at `sampling_ratio`."""
    assert bool(traced_at(ratio).spans("/public/x")) is exported


class BrokenEngine:
    """An engine whose evaluation raises, standing in for any bug inside a phase."""

    def authorize(self, request: object, principal: object) -> None:
        raise RuntimeError("boom")


def test_an_internal_error_marks_the_check_span_as_an_error(traced_at: Callable[[float], Traced]) -> None:
    """A Check that fails closed (internal_error) is a span with status ERROR; a plain deny is not."""
    traced = traced_at(1.0)
    assert traced.spans("/api/orders")[CHECK_SPAN].status.status_code is StatusCode.UNSET
    traced.policy.current = replace(traced.policy.current, engine=BrokenEngine())  # type: ignore[arg-type]
    check = traced.spans("/public/x")[CHECK_SPAN]
    assert check.attributes["extauth.reason"] == "internal_error"
    assert check.status.status_code is StatusCode.ERROR


class BrokenMetadata(dict):
    """gRPC metadata whose reading raises, standing in for any failure while building spans."""

    def get(self, key: object, default: object = None) -> object:
        raise RuntimeError("boom")


def test_a_failure_while_tracing_leaves_the_answer_alone(traced: Traced, reader_token: str) -> None:
    """The Check still answers (allowed) and is audited once when building its spans fails."""
    check = check_request("/api/orders", headers={"authorization": f"Bearer {reader_token}"})
    before = len(traced.sink.events)
    response = traced.loop.run_until_complete(traced.pipeline.check(check, BrokenMetadata(traceparent="x")))
    assert response.status.code == code_pb2.OK
    assert len(traced.sink.events) == before + 1


def test_a_method_outside_the_standard_ones_is_recorded_as_other(traced: Traced) -> None:
    """The method attribute never carries client text beyond the standard method names."""
    assert traced.spans("/public/x", method="PROPFIND")[CHECK_SPAN].attributes["http.request.method"] == "_OTHER"
    assert traced.spans("/public/x", method="GET")[CHECK_SPAN].attributes["http.request.method"] == "GET"


# Token material, marked so that it cannot match a fixed name or an id by chance; the body varies its spelling.
SECRETS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=8, max_size=64).map(
    lambda body: f"SeCrEt{body}")
PLACES = st.sampled_from(["bearer", "basic", "cookie", "api_key", "query", "path", "method", "custom_header",
                          "proxy_authorization"])


def carrying(place: str, secret: str, reader_token: str) -> tuple[str, str, dict[str, str]]:
    """(path, method, headers) of a request that carries `secret` in `place` (besides a valid token)."""
    headers = {"authorization": f"Bearer {reader_token}"}
    path, method = "/api/orders", "GET"
    match place:
        case "bearer":
            headers["authorization"] = f"Bearer {secret}"
        case "basic":
            headers["authorization"] = f"Basic {secret}"
        case "cookie":
            headers["cookie"] = f"session={secret}; theme=dark"
        case "api_key":
            headers["x-api-key"] = secret
        case "query":
            path = f"/api/orders?access_token={secret}"
        case "path":
            path = f"/api/orders/{secret}"
        case "method":
            method = secret.upper()
        case "custom_header":
            headers["x-session-token"] = secret
        case "proxy_authorization":
            headers["proxy-authorization"] = f"Bearer {secret}"
    return path, method, headers


def span_texts(spans: Iterator[ReadableSpan] | list[ReadableSpan]) -> Iterator[str]:
    for span in spans:
        yield span.name
        yield from (f"{key}={value}" for key, value in (span.attributes or {}).items())
        yield from (f"{key}={value}" for key, value in span.resource.attributes.items())
        for event in span.events:
            yield event.name
            yield from (f"{key}={value}" for key, value in (event.attributes or {}).items())
        yield str(span.status.description)
        yield str(span.context.trace_state)


@settings(max_examples=100, deadline=None)
@given(secret=SECRETS, place=PLACES)
def test_no_span_carries_token_material(traced: Traced, reader_token: str, secret: str, place: str) -> None:
    """Whatever carries a credential (authorization, cookie, API key, query, path, method, any header), no span
    name, attribute, event or status holds it, nor any part of the valid token sent beside it."""
    path, method, headers = carrying(place, secret, reader_token)
    spans = list((traced.spans(path, headers, method)).values())
    assert spans
    texts = "\n".join(span_texts(spans))
    assert secret not in texts
    for part in reader_token.split("."):
        assert part not in texts
