"""The audit queue's overflow policy, synchronously: no event loop, no output (queue.py, docs/audit.md#overflow)."""

from hypothesis import given
from hypothesis import strategies as st

from extauth.audit.queue import AuditQueue, AuditStats, Offer


def allow(n: int) -> dict[str, object]:
    return {"event": "decision", "decision": "allow", "request_id": f"a{n}"}


def deny(n: int) -> dict[str, object]:
    return {"event": "decision", "decision": "deny", "request_id": f"d{n}"}


def queue(size: int, overflow: int, sample: float = 1.0) -> AuditQueue:
    return AuditQueue(size, overflow, sample, AuditStats())


def test_a_deny_evicts_the_oldest_allow_when_full() -> None:
    """Full of allows, a deny takes the oldest allow's place; a further allow is dropped; order is arrival order."""
    q = queue(2, 0)
    assert [q.offer(allow(1)), q.offer(allow(2)), q.offer(deny(1)), q.offer(allow(3))] == [
        Offer.QUEUED, Offer.QUEUED, Offer.QUEUED, Offer.DROPPED]
    assert [event["request_id"] for event in q.take(10)] == ["a2", "d1"]
    assert q.stats.dropped == {"allow": 2} and q.take_unreported_drops() == {"allow": 2}
    assert q.take_unreported_drops() == {}


def test_denies_overflow_up_to_their_allowance_then_are_dropped_loudly() -> None:
    """With nothing left to evict, denies get `deny_overflow` more places; past that one is DENY_DROPPED."""
    q = queue(1, 2)
    offers = [q.offer(deny(n)) for n in range(4)]
    assert offers == [Offer.QUEUED, Offer.QUEUED, Offer.QUEUED, Offer.DENY_DROPPED]
    assert (q.depth, q.stats.deny_overflow, q.stats.dropped) == (3, 2, {"deny": 1})


def test_a_closed_queue_counts_what_it_is_offered() -> None:
    """After the writer stopped, nothing is queued and everything offered is counted as dropped by kind."""
    q = queue(10, 10)
    q.closed = True
    assert q.offer(deny(1)) is Offer.DROPPED and q.offer(allow(1)) is Offer.DROPPED
    assert q.depth == 0 and q.stats.dropped == {"deny": 1, "allow": 1}


def test_operational_records_are_never_dropped() -> None:
    """Records queued with `offer_protected` pass any bound and come out in arrival order."""
    q = queue(1, 0)
    q.offer(allow(1))
    q.offer_protected({"event": "policy_reloaded"})
    assert [event["event"] for event in q.take(10)] == ["decision", "policy_reloaded"]


def test_sampling_keeps_or_leaves_a_request_whole_and_never_samples_denies() -> None:
    """A sampled-out allow's completion is sampled out too; denies and UAEX completions are always kept."""
    q = queue(10_000, 0, sample=0.5)
    for n in range(200):
        decision, completion = allow(n), {"event": "completion", "request_id": f"a{n}", "response_flags": "-"}
        assert (q.offer(decision) is Offer.SAMPLED_OUT) == (q.offer(completion) is Offer.SAMPLED_OUT)
        assert q.offer(deny(n)) is Offer.QUEUED
        assert q.offer({"event": "completion", "request_id": f"d{n}", "response_flags": "UAEX"}) is Offer.QUEUED


@given(st.lists(st.sampled_from(["allow", "deny", "take"]), max_size=200), st.integers(1, 8), st.integers(0, 8))
def test_the_policy_holds_for_any_sequence(steps: list[str], size: int, overflow: int) -> None:
    """Whatever arrives: the queue never exceeds size + overflow, a deny is dropped only when no allow is queued,
    and every offered event is queued, dropped or taken (nothing vanishes uncounted)."""
    q = queue(size, overflow)
    offered = taken = 0
    for n, step in enumerate(steps):
        if step == "take":
            taken += len(q.take(3))
            continue
        offered += 1
        before, allows_queued = q.depth, q.droppable_depth
        result = q.offer(allow(n) if step == "allow" else deny(n))
        if result is Offer.DENY_DROPPED:
            assert before >= size + overflow and allows_queued == 0
        assert q.depth <= size + overflow
    assert offered == q.depth + taken + sum(q.stats.dropped.values())
