"""The backend interface: storages own the primitive (run GCRA atomically over some checks), not the policy."""

from collections.abc import Sequence
from typing import Protocol

from extauth.ratelimit.model import LimitCheck, LimitOutcome


class StorageError(Exception):
    """The backend failed (refused, timed out, cluster or script error): the limiter applies failure modes."""


class CheckError(StorageError):
    """The backend answered but could not evaluate this request's checks (a key holding another type): this
    request alone is answered by its failure modes, and the breaker does not count it as a backend failure."""


#: What `acquire_many` returns per request: its outcomes, or the error that answers it alone.
Answer = list[LimitOutcome] | StorageError


class Storage(Protocol):
    name: str

    async def acquire(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        """Evaluate and consume one request's checks atomically (all-or-nothing for enforced checks)."""

    async def acquire_many(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[Answer]:
        """Several requests in one backend round trip, in order, each all-or-nothing on its own. A failure that
        concerns some requests only (one key, one Cluster slot) is returned in their places; one that concerns
        the whole call is raised."""

    async def ping(self) -> bool:
        """True when the backend answers."""

    async def close(self) -> None:
        """Release connections."""


def outcome(check: LimitCheck, raw: Sequence[int]) -> LimitOutcome:
    """A `LimitOutcome` from the four integers a backend returns per check."""
    allowed, remaining, reset_ms, retry_ms = raw
    return LimitOutcome(key=check.key, limit=check.limit, allowed=bool(allowed), remaining=int(remaining),
                        reset_after_seconds=reset_ms / 1000, retry_after_seconds=retry_ms / 1000,
                        shadow=check.shadow, failure_mode=check.failure_mode)


def open_storage(url: str | None, timeout_ms: float = 50, connect_timeout_ms: float | None = None) -> Storage:
    """`None`, "" or `memory://` → in-process; `redis://`, `rediss://`, `unix://`, `redis+cluster://` → Redis."""
    if not url or url.startswith("memory://"):
        from extauth.ratelimit.memory import MemoryStorage
        return MemoryStorage()
    from extauth.ratelimit.redis import RedisStorage
    return RedisStorage.from_url(url, timeout_ms=timeout_ms, connect_timeout_ms=connect_timeout_ms)
