"""TailAudit's plumbing: subscribers get the lines the writer writes, exactly as written and filtered as asked; a
slow one loses lines (and is told how many) without holding anything up."""

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extauth.admin.service import tail_filter
from extauth.admin.v1 import admin_pb2
from extauth.audit.tail import MAX_SUBSCRIBERS, Subscribers, TailSubscriber, TooManySubscribersError
from extauth.audit.writer import AuditWriter


class MemoryOutput:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


def decision(request_id: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"event": "decision", "request_id": request_id, "decision": outcome, "reason": "ok", "status": 200,
            "ts": 1_764_000_000.5, **fields}


async def test_a_subscriber_receives_every_line_as_the_writer_writes_it() -> None:
    """The lines streamed are the file's lines, byte for byte (redacted, chained), in file order."""
    output = MemoryOutput()
    writer = AuditWriter(output, instance="test/0", linger_seconds=0)
    subscriber = writer.subscribers.subscribe(lambda event: True)
    await writer.start()
    for number in range(5):
        writer.emit(decision(f"r{number}", "deny" if number % 2 else "allow"))
    await writer.close()
    streamed = []
    while (item := await subscriber.next()) is not None:
        streamed.append(item)
    assert "".join(line for line, _ in streamed).encode() == output.data
    assert all(dropped == 0 for _, dropped in streamed)


async def test_a_slow_subscriber_loses_lines_past_its_queue_and_is_told_how_many() -> None:
    """With room for 3, a subscriber that reads nothing while 10 lines go by gets the first 3, then the next line
    carries the 7 it missed; the writer never waited for it."""
    subscriber = TailSubscriber(lambda event: True, capacity=3)
    for number in range(10):
        subscriber.offer({"event": "decision"}, f"line {number}\n")
    assert [await subscriber.next() for _ in range(3)] == [(f"line {number}\n", 0) for number in range(3)]
    subscriber.offer({"event": "decision"}, "line 10\n")
    assert await subscriber.next() == ("line 10\n", 7)


def test_subscribers_are_bounded() -> None:
    """Past MAX_SUBSCRIBERS a new tail is refused, and an ended one frees its place."""
    subscribers = Subscribers()
    opened = [subscribers.subscribe(lambda event: True) for _ in range(MAX_SUBSCRIBERS)]
    with pytest.raises(TooManySubscribersError):
        subscribers.subscribe(lambda event: True)
    subscribers.unsubscribe(opened[0])
    subscribers.subscribe(lambda event: True)


async def test_a_waiting_subscriber_ends_when_the_writer_closes() -> None:
    """A tail blocked on the next line gets the end of the stream when the writer stops (the process stops)."""
    writer = AuditWriter(MemoryOutput(), instance="test/0", linger_seconds=0)
    await writer.start()
    subscriber = writer.subscribers.subscribe(lambda event: event.get("event") == "decision")
    waiting = asyncio.create_task(subscriber.next())
    await asyncio.sleep(0)
    await writer.close()
    assert await asyncio.wait_for(waiting, 5) is None


EVENTS = st.fixed_dictionaries({
    "event": st.sampled_from(["decision", "completion", "policy_reloaded", "audit_dropped"]),
    "decision": st.sampled_from(["allow", "deny"]),
    "reason": st.sampled_from(["ok", "forbidden", "missing_token", "rate_limited"]),
    "subject": st.sampled_from(["alice", "bob", None, ""]),
    "route": st.sampled_from(["demo/api", "demo/admin", None]),
})
REQUESTS = st.builds(
    admin_pb2.TailAuditRequest,
    events=st.lists(st.sampled_from(["decision", "completion", "policy_reloaded"]), max_size=2),
    decision=st.sampled_from(["", "allow", "deny"]),
    reasons=st.lists(st.sampled_from(["ok", "forbidden", "rate_limited"]), max_size=2),
    subject=st.sampled_from(["", "alice", "bob"]),
    route=st.sampled_from(["", "demo/api"]))


@given(request=REQUESTS, event=EVENTS)
def test_the_tail_filter_keeps_exactly_the_events_asked_for(request: admin_pb2.TailAuditRequest,
                                                            event: dict[str, Any]) -> None:
    """Kinds narrow by `event`; a decision, reason, subject or route filter keeps only decision events that match
    every one given (an empty subject filter never matches an anonymous decision by accident)."""
    expected = (not request.events or event["event"] in request.events)
    if request.decision or request.reasons or request.subject or request.route:
        expected = expected and event["event"] == "decision" and all((
            not request.decision or event["decision"] == request.decision,
            not request.reasons or event["reason"] in request.reasons,
            not request.subject or event["subject"] == request.subject,
            not request.route or event["route"] == request.route))
    assert tail_filter(request)(event) is expected


def test_streamed_json_is_the_redacted_line() -> None:
    """What a subscriber gets went through the writer's processors: a token in the path is masked."""
    async def run() -> str:
        writer = AuditWriter(MemoryOutput(), instance="test/0", linger_seconds=0)
        subscriber = writer.subscribers.subscribe(lambda event: event.get("event") == "decision")
        await writer.start()
        writer.emit(decision("r1", "deny", path="/x?access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"))
        await writer.close()
        item = await subscriber.next()
        assert item is not None
        return item[0]
    line = asyncio.run(run())
    assert "eyJzdWIiOiIxIn0" not in line and json.loads(line)["request_id"] == "r1"
