"""The audit queue and its overflow policy (docs/audit.md#overflow): synchronous and free of I/O, so the contract
the Check path relies on is testable without an event loop.

- below `queue_size` every event is queued;
- when full, a new allow or completion is dropped; a new deny evicts the oldest queued allow or completion
  instead; every drop is counted by kind, and reported by the writer in an `audit_dropped` record;
- when the queue holds only denies, denies keep coming in up to `deny_overflow` more; past that a deny is dropped
  too (`Offer.DENY_DROPPED`, which the writer logs as an error): never silently.

Allowed requests are sampled by request id, so a sampled allow's decision and completion go together.
"""

import zlib
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Event = dict[str, Any]


@dataclass
class AuditStats:
    """Counters read by the metrics endpoint and by tests; only the event loop thread changes them."""

    queued: int = 0
    written: dict[str, int] = field(default_factory=dict)
    sampled_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: Denies admitted beyond `queue_size` because nothing droppable was left to evict.
    deny_overflow: int = 0
    write_errors: int = 0
    batches: int = 0
    checkpoints: int = 0


class Offer(Enum):
    QUEUED = "queued"
    SAMPLED_OUT = "sampled_out"
    DROPPED = "dropped"
    DENY_DROPPED = "deny_dropped"


class AuditQueue:
    def __init__(self, queue_size: int, deny_overflow: int, allow_sample_rate: float, stats: AuditStats) -> None:
        self.queue_size = queue_size
        self.deny_overflow = deny_overflow
        self.stats = stats
        self._sample_below = int(allow_sample_rate * 2**32)
        # Queued (arrival number, event): droppable ones (allows, completions) apart from protected ones (denies,
        # operational records), so the oldest droppable is evicted in O(1); `take` merges both in arrival order.
        self._droppable: deque[tuple[int, Event]] = deque()
        self._protected: deque[tuple[int, Event]] = deque()
        self._arrivals = 0
        self._unreported_drops: dict[str, int] = {}
        #: Set once the writer has stopped: every later offer is dropped (and counted).
        self.closed = False

    @property
    def depth(self) -> int:
        return len(self._droppable) + len(self._protected)

    @property
    def droppable_depth(self) -> int:
        """Queued allows and completions: what a deny may still evict."""
        return len(self._droppable)

    @property
    def has_unreported_drops(self) -> bool:
        return bool(self._unreported_drops)

    def offer(self, event: Event) -> Offer:
        """One event from the Check path, under the sampling and overflow policy above."""
        kind = event["event"]
        protected = kind == "decision" and event["decision"] == "deny"
        if not protected:
            if kind == "decision":
                kind = "allow"
            if self._sample_below < 2**32 and self._sampled_out(event):
                self.stats.sampled_out += 1
                return Offer.SAMPLED_OUT
        if self.closed:
            self.drop("deny" if protected else kind)
            return Offer.DROPPED
        self._arrivals += 1
        entry = (self._arrivals, event)
        if self.depth < self.queue_size:
            (self._protected if protected else self._droppable).append(entry)
        elif not protected:
            self.drop(kind)
            return Offer.DROPPED
        elif self._droppable:
            evicted = self._droppable.popleft()[1]
            self.drop("allow" if evicted["event"] == "decision" else evicted["event"])
            self._protected.append(entry)
        elif self.depth < self.queue_size + self.deny_overflow:
            self.stats.deny_overflow += 1
            self._protected.append(entry)
        else:
            self.drop("deny")
            return Offer.DENY_DROPPED
        self.stats.queued += 1
        return Offer.QUEUED

    def offer_protected(self, record: Event) -> None:
        """An operational record: queued with the denies, never dropped or sampled."""
        self._arrivals += 1
        self._protected.append((self._arrivals, record))

    def take(self, limit: int) -> list[Event]:
        """Up to `limit` queued events, oldest first."""
        droppable, protected = self._droppable, self._protected
        batch: list[Event] = []
        while len(batch) < limit and (droppable or protected):
            if protected and (not droppable or protected[0][0] < droppable[0][0]):
                batch.append(protected.popleft()[1])
            else:
                batch.append(droppable.popleft()[1])
        return batch

    def drop(self, kind: str, count: int = 1) -> None:
        self.stats.dropped[kind] = self.stats.dropped.get(kind, 0) + count
        self._unreported_drops[kind] = self._unreported_drops.get(kind, 0) + count

    def take_unreported_drops(self) -> dict[str, int]:
        """Drops since the last call, for the next `audit_dropped` record."""
        drops, self._unreported_drops = self._unreported_drops, {}
        return drops

    def _sampled_out(self, event: Event) -> bool:
        """Chosen by request id, so a sampled allow's decision and completion are kept or left out together;
        a completion of a request ext_authz denied (flag UAEX) is always kept, like its decision."""
        if event["event"] == "completion" and "UAEX" in (event.get("response_flags") or ""):
            return False
        return zlib.crc32(str(event.get("request_id", "")).encode()) >= self._sample_below
