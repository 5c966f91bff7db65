"""In-process storage: the embedded default without Redis, and the `local` failure mode's buckets.

Same GCRA code as the Lua script (`gcra.py`), so both backends answer identically for the same `now`. One
event loop per process: no locking. Bounded: expired buckets are purged when the map is full, then the least
recently used ones are evicted (an evicted bucket is a full bucket, so eviction can only admit more).
"""

from collections import OrderedDict
from collections.abc import Sequence

from extauth.ratelimit.gcra import State, evaluate
from extauth.ratelimit.model import LimitCheck, LimitOutcome
from extauth.ratelimit.storage import Answer


class MemoryStorage:
    name = "memory"

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[State, int]] = OrderedDict()  # key -> (state, expires_at_ms)

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        return self.acquire_now([checks], now_ms)[0]

    async def acquire_many(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[Answer]:
        return list(self.acquire_now(requests, now_ms))

    def acquire_now(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[list[LimitOutcome]]:
        """The synchronous core (nothing here awaits)."""
        buckets = self._buckets

        def get(key: str) -> State | None:
            entry = buckets.get(key)
            if entry is None:
                return None
            if entry[1] <= now_ms:
                del buckets[key]
                return None
            return entry[0]

        def put(key: str, state: State, ttl_ms: int) -> None:
            if key in buckets:
                buckets.move_to_end(key)
            elif len(buckets) >= self.max_keys:
                self._make_room(now_ms)
            buckets[key] = (state, now_ms + ttl_ms)

        raws = evaluate(requests, now_ms, get, put)
        return [[LimitOutcome.from_backend(c, r) for c, r in zip(checks, raw, strict=True)]
                for checks, raw in zip(requests, raws, strict=True)]

    def peek(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        """What `acquire` would answer, consuming nothing."""
        raw = evaluate([checks], now_ms, lambda key: self.bucket(key, now_ms), lambda key, state, ttl: None)[0]
        return [LimitOutcome.from_backend(c, r) for c, r in zip(checks, raw, strict=True)]

    def bucket(self, key: str, now_ms: int) -> State | None:
        """One bucket's state (None when empty or expired), for the queued mode's reservations."""
        entry = self._buckets.get(key)
        return entry[0] if entry is not None and entry[1] > now_ms else None

    def set_bucket(self, key: str, state: State, ttl_ms: int, now_ms: int) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._make_room(now_ms)
        self._buckets[key] = (state, now_ms + ttl_ms)
        self._buckets.move_to_end(key)

    def drop_bucket(self, key: str) -> None:
        self._buckets.pop(key, None)

    def _make_room(self, now_ms: int) -> None:
        expired = [key for key, (_, expires) in self._buckets.items() if expires <= now_ms]
        for key in expired:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._buckets.clear()
