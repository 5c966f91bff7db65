"""One trace through real Envoy (with envoy/examples/tracing.yaml added), extauth and the upstream, exported over
OTLP/gRPC to one collector (docs/tracing.md)."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.collector import Collector, ExportedSpan, running_collector

from extauth.devstack.envoy import SHIPPED_BOOTSTRAP, Node, add_tracing, connection_managers, validate_bootstrap
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

PHASES = {"extauth.screen", "extauth.authenticate", "extauth.authorize", "extauth.waf",
          "extauth.rate_limit", "extauth.respond"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
           upstream: RunningUpstream) -> Iterator[tuple[EnvoyProcess, Collector]]:
    run_dir = tmp_path_factory.mktemp("traced")
    with running_collector() as (collector, port):
        extauth = ExtauthProcess(run_dir / "extauth", extauth_config(
            run_dir / "extauth", certs, tracing={"endpoint": f"http://127.0.0.1:{port}", "sampling_ratio": 0.0}))
        try:
            extauth.wait_serving()
            (run_dir / "envoy").mkdir()
            envoy = EnvoyProcess(run_dir / "envoy", certs, upstream.port, extauth.addresses,
                                 edit=lambda bootstrap: trace_every_request(bootstrap, port))
            try:
                yield envoy, collector
            finally:
                envoy.stop()
        finally:
            extauth.stop()


def trace_every_request(bootstrap: Node, collector_port: int) -> None:
    """The example's additions, with Envoy sampling every request instead of the example's 1%."""
    add_tracing(bootstrap, collector_port)
    for manager in connection_managers(bootstrap["static_resources"]["listeners"][0]):
        manager["tracing"]["random_sampling"] = {"value": 100}


def spans_of_trace(collector: Collector, trace_id: str, services: set[str],
                   timeout: float = 30.0) -> list[ExportedSpan]:
    """The trace's spans once every service in `services` has exported its part (both batch every few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [span for span in collector.spans() if span.trace_id == trace_id]
        if {span.service for span in spans} >= services and PHASES & {span.name for span in spans}:
            return spans
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id} incomplete: {[(s.service, s.name) for s in collector.spans()]}")


def test_one_trace_shows_envoy_then_extauth_then_the_upstream(
        traced: tuple[EnvoyProcess, Collector], certs: DevCerts) -> None:
    """An allowed request is one trace: Envoy's spans, extauth's Check (a child of Envoy's) with its phases, and
    the `traceparent` the upstream received carries the same trace id."""
    envoy, collector = traced
    token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    response = envoy.get("/api/orders", token)
    assert response.status == 200
    upstream_traceparent = response.json()["headers"]["traceparent"]
    _, trace_id, _, flags = upstream_traceparent.split("-")
    assert flags == "01"
    spans = spans_of_trace(collector, trace_id, {"envoy-ingress", "extauth"})
    envoy_span_ids = {span.span_id for span in spans if span.service == "envoy-ingress"}
    check = next(span for span in spans if span.name == "extauth.check")
    assert check.parent_span_id in envoy_span_ids
    assert check.attributes["extauth.request_id"] == response.headers["x-request-id"]
    phases = {span.name for span in spans if span.parent_span_id == check.span_id}
    assert phases == PHASES
    assert token not in str(spans)


def test_the_tracing_example_added_to_the_shipped_bootstrap_validates(envoy_binary: Path, tmp_path: Path) -> None:
    """envoy/envoy.yaml plus envoy/examples/tracing.yaml, combined as docs/tracing.md says, is accepted by
    `envoy --mode validate` from a root holding the dev certificates (as `make run` runs it)."""
    create_dev_certs(tmp_path / ".run" / "certs")
    bootstrap = yaml.safe_load(SHIPPED_BOOTSTRAP.read_text())
    add_tracing(bootstrap)
    combined = tmp_path / "envoy.yaml"
    combined.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    validate_bootstrap(combined, cwd=tmp_path)
