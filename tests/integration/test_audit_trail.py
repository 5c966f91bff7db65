"""The audit trail through a real Envoy: decision + completion per request, slow sink, SIGTERM, metrics."""

import json
import os
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.checks import check
from support.polling import wait_for

from extauth.audit.chain import verify
from extauth.audit.signing import Verifier, load_public_key, write_key_pair
from extauth.cli import main
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, Response, extauth_config, free_port
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

#: (path, with reader token) → the status the demo policy answers.
REQUESTS = [("/public/hello", False, 200), ("/api/orders", False, 401), ("/api/orders", True, 200),
            ("/admin/users", True, 403), ("/elsewhere", True, 403)]


def request_id_of(response: Response) -> str:
    """Allowed requests reach the echo upstream (which shows x-request-id); denials carry it in their body."""
    body = response.json()
    return body["headers"]["x-request-id"] if response.status == 200 else body["request_id"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture(scope="module")
def reader_token(certs: DevCerts) -> str:
    return mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
            upstream: RunningUpstream, metrics_port: int) -> Iterator[tuple[ExtauthProcess, EnvoyProcess]]:
    run_dir = tmp_path_factory.mktemp("audited")
    config = extauth_config(run_dir, certs)
    config["server"]["metrics_listen"] = f"tcp:127.0.0.1:{metrics_port}"
    extauth = ExtauthProcess(run_dir / "extauth", config)
    extauth.wait_serving()
    (run_dir / "envoy").mkdir()
    envoy = EnvoyProcess(run_dir / "envoy", certs, upstream.port, extauth.addresses)
    yield extauth, envoy
    envoy.stop()
    extauth.stop()


def test_every_request_yields_one_decision_and_one_completion(
        audited: tuple[ExtauthProcess, EnvoyProcess], reader_token: str) -> None:
    """Each request through Envoy produces exactly one decision and one completion sharing its request_id."""
    extauth, envoy = audited
    statuses = {}
    for path, with_token, expected in REQUESTS * 3:
        response = envoy.get(path, reader_token if with_token else None)
        assert response.status == expected
        statuses[request_id_of(response)] = (expected, path)

    def joined() -> dict[str, list[dict[str, Any]]]:
        events: dict[str, list[dict[str, Any]]] = {}
        for event in extauth.audit_events(kind=None):
            if event.get("request_id") in statuses:
                events.setdefault(event["request_id"], []).append(event)
        complete = all(len(found) == 2 for found in events.values()) and len(events) == len(statuses)
        return events if complete else {}

    events = wait_for(joined)
    for request_id, (status, path) in statuses.items():
        decision, completion = sorted(events[request_id], key=lambda event: event["event"] != "decision")
        assert (decision["event"], completion["event"]) == ("decision", "completion")
        assert decision["status"] == completion["status"] == status
        assert decision["path"] == completion["path"] == path
        assert completion["duration_us"] >= 0 and completion["bytes_sent"] > 0
        assert (completion["upstream_host"] is not None) == (status == 200)
        assert ("UAEX" in (completion["response_flags"] or "")) == (status != 200)
        assert set(decision["timings_us"]) >= {"screen"}


def test_metrics_endpoint_counts_every_decision(audited: tuple[ExtauthProcess, EnvoyProcess], metrics_port: int,
                                                reader_token: str) -> None:
    """The scraped decision counters equal the decisions in the audit stream, by result and reason."""
    extauth, envoy = audited
    for path, with_token, _ in REQUESTS:
        envoy.get(path, reader_token if with_token else None)
    audited_counts = Counter((event["decision"], event["reason"]) for event in extauth.audit_events())
    samples = scrape(metrics_port)
    scraped = {dict(labels)["decision"] + "/" + dict(labels)["reason"]: value
               for (name, labels), value in samples.items() if name == "extauth_decisions_total"}
    assert scraped == {f"{decision}/{reason}": count for (decision, reason), count in audited_counts.items()}
    assert samples[("extauth_check_duration_seconds_count", ())] == sum(audited_counts.values())
    assert samples[("extauth_check_phase_duration_seconds_count", (("phase", "screen"),))] == sum(
        audited_counts.values())
    assert samples[("extauth_audit_events_dropped_total", (("kind", "deny"),))] == 0
    assert samples[("extauth_policy_reloads_total", (("result", "failed"),))] == 0
    assert samples[("extauth_jwks_refreshes_total", (("provider", "dev"),))] == 1  # a key file loads once
    assert samples[("extauth_jwks_refresh_failures_total", (("provider", "dev"),))] == 0
    assert ("extauth_audit_queue_depth", ()) in samples and ("extauth_access_log_entries_total", ()) in samples


def burst(envoy: EnvoyProcess, requests: list[tuple[str, bool]], token: str, workers: int = 32) -> list[Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda spec: envoy.get(spec[0], token if spec[1] else None), requests))


def test_slow_sink_under_a_burst_loses_no_denial_and_counts_every_drop(
        tmp_path: Path, envoy_binary: Path, certs: DevCerts, upstream: RunningUpstream, reader_token: str) -> None:
    """With the audit output a pipe nobody reads during a concurrent burst, every deny is written and the
    allows missing from the stream are exactly the ones the writer reports dropped."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets extauth open the pipe; read only after the burst
    config = extauth_config(tmp_path, certs, audit={"output": str(fifo), "queue_size": 20, "deny_overflow": 5000})
    extauth = ExtauthProcess(tmp_path / "extauth", config)
    received = bytearray()
    try:
        extauth.wait_serving()
        (tmp_path / "envoy").mkdir()
        envoy = EnvoyProcess(tmp_path / "envoy", certs, upstream.port, extauth.addresses)
        try:
            specs = [("/public/x", False), ("/api/orders", False), ("/api/orders", True), ("/admin/users", True)]
            responses = burst(envoy, specs * 150, reader_token)
        finally:
            envoy.stop()
        os.set_blocking(reader, True)
        drain = threading.Thread(target=lambda: received.extend(b"".join(iter_fifo(reader))))
        drain.start()
        assert extauth.stop() == 0
        drain.join(10)
    finally:
        extauth.stop()
        os.close(reader)

    sent_allows = {request_id_of(r) for r in responses if r.status == 200}
    sent_denies = {request_id_of(r) for r in responses if r.status != 200}
    assert len(sent_allows) == 300 and len(sent_denies) == 300
    lines = received.decode().splitlines(keepends=True)
    events = [json.loads(line) for line in lines]
    decisions = [event for event in events if event["event"] == "decision"]
    written_denies = {event["request_id"] for event in decisions if event["decision"] == "deny"}
    written_allows = {event["request_id"] for event in decisions if event["decision"] == "allow"}
    closed = events[-1]
    assert closed["event"] == "audit_closed"
    assert sent_denies <= written_denies
    assert closed["dropped"].get("deny", 0) == 0
    assert closed["dropped"]["allow"] == len(sent_allows - written_allows) > 0
    reported = sum(event["dropped"].get("allow", 0) for event in events if event["event"] == "audit_dropped")
    assert reported == closed["dropped"]["allow"]
    assert verify(lines).ok(require_sealed=True)


def iter_fifo(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, 65536):
        yield chunk


def test_sigterm_during_load_writes_the_event_of_every_answered_check(
        tmp_path: Path, envoy_binary: Path, certs: DevCerts, upstream: RunningUpstream, reader_token: str) -> None:
    """SIGTERM while requests stream in: every request extauth answered has its decision event on disk, and the
    stream ends sealed (audit_closed) with an intact chain."""
    extauth = ExtauthProcess(tmp_path / "extauth", extauth_config(tmp_path / "extauth", certs))
    extauth.wait_serving()
    (tmp_path / "envoy").mkdir()
    envoy = EnvoyProcess(tmp_path / "envoy", certs, upstream.port, extauth.addresses)
    stop_load = threading.Event()
    sent = Counter[str]()

    def load(path: str, token: str | None) -> None:
        while not stop_load.is_set():
            sent[str(envoy.get(path, token).status)] += 1

    threads = [threading.Thread(target=load, args=(path, reader_token if token else None))
               for path, token in [("/api/orders", True), ("/api/orders", False), ("/admin/users", True)] * 4]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(sent.values()) > 200)
        extauth.process.process.terminate()
        assert extauth.process.process.wait(timeout=15) == 0
        stop_load.set()
        for thread in threads:
            thread.join(10)
    finally:
        stop_load.set()
        envoy.stop()  # flushes the JSON access log
        extauth.stop()

    access_log = [json.loads(line) for line in (tmp_path / "envoy" / "envoy-access.log").read_text().splitlines()]
    answered = {entry["request_id"] for entry in access_log if entry["response_code_details"] != "ext_authz_error"}
    assert len(answered) > 200 and sent["503"] > 0  # load ran before and after the SIGTERM
    decisions = {event["request_id"] for event in extauth.audit_events()}
    assert answered <= decisions
    lines = extauth.audit_path.read_text().splitlines(keepends=True)
    assert verify(lines).ok(require_sealed=True)


def test_signing_process_writes_checkpoints_and_leaves_a_sealed_file_after_sigterm(
        tmp_path: Path, certs: DevCerts, reader_token: str) -> None:
    """A real extauth with `audit.signing_key` signs checkpoints while it serves (its open file verifies, with an
    unsealed tail at most); stopped by SIGTERM, the file ends with a signed audit_closed that `audit verify
    --require-sealed --public-key` accepts, and an unrelated key rejects."""
    private_key, public_key = write_key_pair(tmp_path / "keys")
    audit_path = tmp_path / "audit.jsonl"
    config = extauth_config(tmp_path, certs, audit={"output": str(audit_path), "signing_key": str(private_key),
                                                    "checkpoint_every_events": 5})
    extauth = ExtauthProcess(tmp_path / "extauth", config)
    verifier = Verifier.of([load_public_key(public_key)])
    try:
        extauth.wait_serving()
        for index in range(12):
            check(extauth.addresses[0], reader_token if index % 2 else None)
        records = wait_for(lambda: (found := extauth.audit_events(kind=None)) and
                           sum(event["event"] == "decision" for event in found) == 12 and found)
        assert sum(event["event"] == "audit_checkpoint" for event in records) >= 3
        running = verify(audit_path.read_text().splitlines(keepends=True), verifier)
        assert running.ok() and not running.ok(require_sealed=True)
        assert extauth.stop() == 0
    finally:
        extauth.stop()
    lines = audit_path.read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["event"] == "audit_closed" and '"signature":' in lines[-1]
    assert main(["audit", "verify", str(audit_path), "--require-sealed", "--public-key", str(public_key)]) == 0
    other_public = write_key_pair(tmp_path / "other")[1]
    assert main(["audit", "verify", "--public-key", str(other_public), str(audit_path)]) == 1
