"""The backend interface: storages own the primitive (run GCRA atomically over some checks), not the policy."""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class SynchronousStorage(Protocol):
    """A store that answers without awaiting (in process): the limiter calls it inline, without batching."""

    def acquire_now(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[list[LimitOutcome]]:
        """`acquire_many`, answered at once."""
