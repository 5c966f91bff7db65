"""The audit writer: non-blocking emit, overflow policy with exact counts, sampling, batching, flush on close."""

import asyncio
import json
import threading
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth import logs
from extauth.audit.chain import verify
from extauth.audit.writer import AuditWriter, render_json, utc_timestamp


class MemoryOutput:
    """Collects what the writer writes; `gate` (when cleared) makes every write block, like a stalled pipe."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.gate.wait()
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for data in self.writes for line in data.decode().splitlines()]

    def lines(self) -> list[str]:
        return [line + "\n" for data in self.writes for line in data.decode().splitlines()]


def decision(request_id: str, allowed: bool) -> dict[str, Any]:
    return {"event": "decision", "request_id": request_id, "decision": "allow" if allowed else "deny",
            "status": 200 if allowed else 403, "reason": "ok" if allowed else "forbidden", "ts": 1_764_000_000.5}


def completion(request_id: str, flags: str | None = None) -> dict[str, Any]:
    return {"event": "completion", "request_id": request_id, "status": 200, "response_flags": flags}


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == kind]


async def started(output: MemoryOutput, **options: Any) -> AuditWriter:
    writer = AuditWriter(output, instance="test/0", linger_seconds=0, **options)
    await writer.start()
    return writer


async def wait_until_blocked(output: MemoryOutput, writer: AuditWriter) -> None:
    """Let the writer pick up what is queued and stall in `write` (the gate is closed)."""
    for _ in range(100):
        await asyncio.sleep(0.01)
        if writer.depth == 0:
            return


async def test_every_event_is_written_once_in_order_with_a_valid_chain() -> None:
    """Events come out in emit order, each exactly once, between audit_started and audit_closed, chained."""
    output = MemoryOutput()
    writer = await started(output)
    for index in range(50):
        writer.emit(decision(f"r{index}", allowed=index % 3 != 0))
    await writer.close()
    events = output.events()
    assert [event["event"] for event in (events[0], events[-1])] == ["audit_started", "audit_closed"]
    assert [event["request_id"] for event in of_kind(events, "decision")] == [f"r{index}" for index in range(50)]
    assert events[-1]["events"] == 51 and output.closed
    report = verify(output.lines())
    assert report.ok(require_sealed=True), report.problems


async def test_events_are_rendered_with_utc_timestamps_and_schema_fields() -> None:
    """A decision's float `ts` becomes ISO-8601 UTC, and chain fields are added with `hash` last."""
    output = MemoryOutput()
    writer = await started(output)
    writer.emit(decision("r1", allowed=True))
    await writer.close()
    line = output.lines()[1]
    event = json.loads(line)
    assert event["ts"] == "2025-11-24T16:00:00.500000Z"
    assert (event["seq"], event["chain"].startswith("test/0/")) == (2, True)
    assert line.rstrip().endswith(f'"hash":"{event["hash"]}"}}')


#: Any text, lone surrogates included (a JWT claim can carry one: JSON's `\\ud800` escape decodes to it).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text | st.integers(), inner, max_size=3),
    max_leaves=12)
JSON = json.JSONEncoder(separators=(",", ":"), default=repr).encode


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_a_rendered_value_reads_back_as_json_renders_it(value) -> None:
    """Whatever orjson refuses (lone surrogates, integers past 64 bits, non-string keys) still renders, as ASCII
    (one line for any line splitter), and every value reads back as json.JSONEncoder's rendering of it does."""
    rendered = render_json({"value": value})
    assert rendered.isascii() and len(rendered.splitlines()) == 1
    assert json.loads(rendered) == json.loads(JSON({"value": value}))


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(any_text, min_size=1, max_size=8))
def test_lines_carrying_any_text_verify_as_the_cli_reads_them(texts) -> None:
    """Lines with non-ASCII text or lone surrogates (both rendered by the fallback) keep their hash as read back."""
    output = MemoryOutput()
    writer = AuditWriter(output, instance="test/0", linger_seconds=0)
    for index, text in enumerate(texts):
        writer.emit({**decision(f"r{index}", allowed=False), "subject": text})
    output.write(writer._render_batch())
    lines = [line + "\n" for data in output.writes
             for line in data.decode("utf-8", errors="replace").splitlines()]  # as `extauth audit verify` opens a file
    report = verify(lines)
    assert report.ok(), report.problems
    assert [json.loads(line)["subject"] for line in lines] == [json.loads(JSON(text)) for text in texts]


def test_utc_timestamp_formats_microseconds() -> None:
    """The cached per-second prefix still yields the right microseconds for every call."""
    render = utc_timestamp()
    assert render(0.000001) == "1970-01-01T00:00:00.000001Z"
    assert render(86_400.25) == "1970-01-02T00:00:00.250000Z"


async def test_full_queue_drops_new_allows_and_counts_them_exactly() -> None:
    """With the sink stalled and the queue full, each further allow is dropped and counted, never queued."""
    output = MemoryOutput()
    output.gate.clear()
    writer = await started(output, queue_size=10, deny_overflow=0)
    await wait_until_blocked(output, writer)  # audit_started is in flight
    for index in range(25):
        writer.emit(decision(f"a{index}", allowed=True))
    assert writer.depth == 10 and writer.stats.dropped == {"allow": 15}
    output.gate.set()
    await writer.close()
    events = output.events()
    assert len(of_kind(events, "decision")) == 10
    (gap,) = of_kind(events, "audit_dropped")
    assert gap["dropped"] == {"allow": 15}


async def test_deny_evicts_the_oldest_allow_and_no_deny_is_lost() -> None:
    """A burst of mixed decisions on a stalled sink keeps every deny; allows evicted or refused are counted."""
    output = MemoryOutput()
    output.gate.clear()
    writer = await started(output, queue_size=20, deny_overflow=100)
    await wait_until_blocked(output, writer)
    sent_allows, sent_denies = [], []
    for index in range(200):
        allowed = index % 4 != 0
        (sent_allows if allowed else sent_denies).append(f"r{index}")
        writer.emit(decision(f"r{index}", allowed=allowed))
    output.gate.set()
    await writer.close()
    decisions = of_kind(output.events(), "decision")
    written_denies = [event["request_id"] for event in decisions if event["decision"] == "deny"]
    written_allows = [event["request_id"] for event in decisions if event["decision"] == "allow"]
    assert written_denies == sent_denies
    assert writer.stats.dropped == {"allow": len(sent_allows) - len(written_allows)}
    assert sum(gap["dropped"]["allow"] for gap in of_kind(output.events(), "audit_dropped")) == \
        writer.stats.dropped["allow"]
    assert verify(output.lines()).ok(require_sealed=True)


async def test_denies_use_the_overflow_then_are_dropped_counted_and_logged() -> None:
    """When only denies are queued they grow into deny_overflow; past it a deny is dropped, counted, logged."""
    output = MemoryOutput()
    output.gate.clear()
    writer = await started(output, queue_size=5, deny_overflow=3)
    await wait_until_blocked(output, writer)
    for index in range(10):
        writer.emit(decision(f"d{index}", allowed=False))
    assert (writer.depth, writer.stats.deny_overflow, writer.stats.dropped) == (8, 3, {"deny": 2})
    output.gate.set()
    await writer.close()
    events = output.events()
    assert len(of_kind(events, "decision")) == 8
    assert of_kind(events, "audit_closed")[0]["dropped"] == {"deny": 2}


async def test_allow_sampling_is_by_request_id_and_never_touches_denies() -> None:
    """At rate 0.25 about a quarter of allows are kept (chosen by request id, completions alike); all denies kept."""
    output = MemoryOutput()
    writer = await started(output, allow_sample_rate=0.25)
    ids = [f"req-{index}" for index in range(400)]
    for request_id in ids:
        writer.emit(decision(request_id, allowed=True))
        writer.emit(completion(request_id))
        writer.emit(decision(f"deny-{request_id}", allowed=False))
        writer.emit(completion(f"deny-{request_id}", flags="UAEX"))
    await writer.close()
    events = output.events()
    kept = {event["request_id"] for event in of_kind(events, "decision") if event["decision"] == "allow"}
    expected = {request_id for request_id in ids if zlib.crc32(request_id.encode()) < 0.25 * 2**32}
    assert kept == expected and 50 < len(kept) < 150
    completions = {event["request_id"] for event in of_kind(events, "completion")}
    assert completions == kept | {f"deny-{request_id}" for request_id in ids}
    assert len([e for e in of_kind(events, "decision") if e["decision"] == "deny"]) == 400
    assert writer.stats.sampled_out == 2 * (400 - len(kept))


async def test_a_stalled_sink_never_blocks_emit() -> None:
    """emit returns at once while the output is blocked in write (the Check path never waits on the sink)."""
    output = MemoryOutput()
    output.gate.clear()
    writer = await started(output, queue_size=100)
    await wait_until_blocked(output, writer)
    for index in range(1000):
        writer.emit(decision(f"r{index}", allowed=False))
    assert writer.depth == 1000 - writer.stats.dropped.get("deny", 0)
    output.gate.set()
    await writer.close()


async def test_close_writes_every_queued_event_before_returning() -> None:
    """Everything queued when close() is called is on the output when it returns."""
    output = MemoryOutput()
    writer = await started(output, queue_size=100_000)
    for index in range(5000):
        writer.emit(decision(f"r{index}", allowed=index % 2 == 0))
    await writer.close()
    assert len(of_kind(output.events(), "decision")) == 5000


async def test_write_errors_are_retried() -> None:
    """A failing write is retried and the events still arrive; the error is counted."""
    class Flaky(MemoryOutput):
        failures = 1

        def write(self, data: bytes) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError(28, "No space left on device")
            super().write(data)

    output = Flaky()
    writer = await started(output)
    writer.emit(decision("r1", allowed=False))
    await writer.close()
    assert writer.stats.write_errors == 1
    assert [event["request_id"] for event in of_kind(output.events(), "decision")] == ["r1"]


@pytest.mark.parametrize("level", ["error", "info"])
async def test_audit_events_are_written_whatever_the_operational_log_level(level: str) -> None:
    """`logging.level: error` quiets operational logs but never drops an audit event."""
    logs.configure(level)
    try:
        output = MemoryOutput()
        writer = await started(output)
        writer.emit(decision("r1", allowed=True))
        await writer.close()
        assert [event["request_id"] for event in of_kind(output.events(), "decision")] == ["r1"]
    finally:
        logs.configure("info")
