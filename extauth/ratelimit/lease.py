"""Leased mode (`mode: leased`): a process takes up to K units of a bucket from Redis in one call and spends them
locally until they are used up or the lease expires, so Redis sees one call per K requests instead of one each.

The units are consumed in Redis when they are leased (`lua/lease.lua`, the same GCRA bucket and arithmetic as
`gcra.lua`), so leases never admit more than the bucket holds; what leasing adds is a shift in time: units
leased just before a window may be spent inside it. A lease lives `ttl_ms`, so in any window of the limit's
period at most `limit + (leases outstanding) x K` requests pass, where a process holds at most one lease per
key and window (concurrent Checks wait for the lease being fetched instead of fetching their own).

K adapts to the rate this process observed on the key: the units spent from its previous lease, scaled to one
`ttl_ms` (`ceil(spent x ttl / elapsed)`), at most `max_tokens` and at most a tenth of the window's limit. A key
seen once per lease lifetime or less gets K = 1: one unit per call, exactly what exact mode does. Units left
when a lease expires are not returned (a return would be one more call per lease and race with the refill);
they are at most K - 1 per process and lease, and the bucket refills them. A lease call that finds the bucket
empty is remembered too: until the bucket's retry-after, this process rejects the key's Checks without a call.
"""

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Protocol

from extauth.ratelimit.gcra import State
from extauth.ratelimit.model import LimitCheck, LimitOutcome
from extauth.ratelimit.storage import CheckError, Storage, StorageError

if TYPE_CHECKING:
    from extauth.ratelimit.redis import RedisStorage

LEASE_LUA = resources.files("extauth.ratelimit").joinpath("lua/lease.lua").read_text()
#: A lease never takes more than this share of a window's limit (1/10), so one process cannot drain a bucket.
LEASE_SHARE = 10

Grant = tuple[int, int, int, int]  # granted, remaining, reset_after_ms, retry_after_ms
#: What a source answers per wanted lease: its grant, or the error that answers this check by its failure mode.
GrantAnswer = Grant | StorageError


def grant(state: State | None, now_ms: int, limit: int, period_ms: int, want: int,
          need: int = 1) -> tuple[State | None, int, Grant]:
    """The Python twin of `lua/lease.lua` for one key: (new state or None if unchanged, TTL in ms, grant). Fewer
    units than `need` (the asking request's cost) are not leased: no request could spend them."""
    backlog = 0 if state is None else max(0, (state[0] - now_ms) * limit + state[1])
    capacity = period_ms * limit
    room = (capacity - backlog) // period_ms
    granted = min(want, room) if room >= need else 0
    if granted == 0:
        return None, 0, (0, 0, -(-backlog // limit), -(-(backlog + need * period_ms - capacity) // limit))
    after = backlog + granted * period_ms
    ttl = max(1, -(-after // limit))
    return (now_ms + after // limit, after % limit), ttl, (granted, room - granted, ttl, 0)


class LeaseSource(Protocol):
    async def fetch(self, wants: Sequence[tuple[LimitCheck, int]], now_ms: int) -> list[GrantAnswer]:
        """One lease of up to `want` units per (check, want), in order; raises `StorageError` when the whole call
        fails, returns a `StorageError` in the place of a lease that failed alone."""


class RedisLeaseSource:
    """Leases from Redis: one EVALSHA for every key (standalone), or one per hash slot, concurrently (Cluster)."""

    def __init__(self, storage: "RedisStorage") -> None:
        self.storage = storage
        self._script = storage.client.register_script(LEASE_LUA)

    async def fetch(self, wants: Sequence[tuple[LimitCheck, int]], now_ms: int) -> list[GrantAnswer]:
        from extauth.ratelimit.redis import BACKEND_ERRORS, slot_of

        storage = self.storage
        calls: dict[int, list[int]] = {}
        for index, (check, _) in enumerate(wants):
            calls.setdefault(slot_of(check) if storage.cluster else 0, []).append(index)
        try:
            if storage.cluster:
                await storage.client.initialize()
            if len(calls) == 1:
                replies: list[list[int] | BaseException] = [await self._call(wants, now_ms)]
            else:
                replies = await asyncio.gather(*(self._call([wants[i] for i in call], now_ms)
                                                 for call in calls.values()), return_exceptions=True)
        except BACKEND_ERRORS as error:
            raise StorageError(f"{storage.name}: {type(error).__name__}: {error}") from error
        by_index: dict[int, GrantAnswer] = {}
        for call, reply in zip(calls.values(), replies, strict=True):
            for position, index in enumerate(call):
                if isinstance(reply, BaseException):  # one Cluster slot failed: only the leases in it
                    by_index[index] = StorageError(f"{storage.name}: {type(reply).__name__}: {reply}")
                    continue
                raw = reply[4 * position:4 * position + 4]
                by_index[index] = (CheckError(f"{storage.name}: the lease script could not read "
                                              f"{wants[index][0].storage_key!r}") if raw[0] < 0
                                   else (int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3])))
        return [by_index[index] for index in range(len(wants))]

    async def _call(self, wants: Sequence[tuple[LimitCheck, int]], now_ms: int) -> list[int]:
        args: list[int] = [now_ms]
        for check, want in wants:
            args += [check.limit.limit, check.limit.period_ms, want, check.cost]
        return await self._script(keys=[check.storage_key for check, _ in wants], args=args)


def lease_source_for(storage: Storage) -> LeaseSource | None:
    """Redis storages lease; any other store (in process) has no round trip to save: leased acts as exact."""
    from extauth.ratelimit.redis import RedisStorage

    return RedisLeaseSource(storage) if isinstance(storage, RedisStorage) else None


@dataclass(slots=True)
class Lease:
    """Units of one bucket held by this process."""

    left: int
    spent: int
    granted_ms: int
    expires_ms: int
    #: What Redis reported at the grant: units left in the bucket after it, and when the bucket is full again.
    remaining: int
    reset_at_ms: int
    #: The bucket had no unit for this process: until then, Checks are rejected here without a store call.
    empty_until_ms: int = 0

    def covers(self, cost: int, now_ms: int) -> bool:
        return self.left >= cost and now_ms < self.expires_ms

    def spend(self, cost: int) -> None:
        self.left -= cost
        self.spent += cost

    def outcome(self, check: LimitCheck, now_ms: int) -> LimitOutcome:
        return LimitOutcome(key=check.key, limit=check.limit, allowed=True, remaining=self.remaining + self.left,
                            reset_after_seconds=max(0, self.reset_at_ms - now_ms) / 1000, retry_after_seconds=0.0,
                            failure_mode=check.failure_mode)

    def rejection(self, check: LimitCheck, now_ms: int) -> LimitOutcome:
        return LimitOutcome(key=check.key, limit=check.limit, allowed=False, remaining=0,
                            reset_after_seconds=max(0, self.reset_at_ms - now_ms) / 1000,
                            retry_after_seconds=max(1, self.empty_until_ms - now_ms) / 1000,
                            failure_mode=check.failure_mode)


#: Fetches leases under the limiter's timeout and breaker: a grant per want, or None (answer by failure mode).
Fetch = Callable[[Sequence[tuple[LimitCheck, int]], int], Awaitable[list[Grant | None]]]


@dataclass(frozen=True, slots=True)
class Taken:
    """Units one request took from its leases: the outcome per leased check (None: fetching its lease failed,
    the failure mode answers), and what to give back if the request is rejected after all."""

    outcomes: list[LimitOutcome | None]
    spent: list[tuple[str, Lease, int]]


class LeaseBook:
    """This process's leases, one per bucket (`storage_key`), bounded to `max_keys` (least recently used first)."""

    def __init__(self, ttl_ms: int = 100, max_tokens: int = 64, max_keys: int = 100_000) -> None:
        self.ttl_ms = ttl_ms
        self.max_tokens = max_tokens
        self.max_keys = max_keys
        self._leases: OrderedDict[str, Lease] = OrderedDict()
        self._fetching: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def size_for(self, check: LimitCheck, now_ms: int) -> int:
        """K for the next lease of `check`'s bucket: the rate observed on the previous one, scaled to a lease
        lifetime, within [cost, max(cost, min(max_tokens, limit / LEASE_SHARE))]."""
        cap = max(1, min(self.max_tokens, check.limit.limit // LEASE_SHARE))
        previous = self._leases.get(check.storage_key)
        if previous is None:
            return check.cost
        wanted = math.ceil(previous.spent * self.ttl_ms / max(1, now_ms - previous.granted_ms))
        return max(check.cost, min(cap, wanted))

    async def take(self, checks: Sequence[LimitCheck], now_ms: int, fetch: Fetch) -> Taken:
        """Spend each check's cost from its bucket's lease, fetching leases where needed (one call for all)."""
        outcomes: list[LimitOutcome | None] = [None] * len(checks)
        spent: list[tuple[str, Lease, int]] = []
        missing = self._spend_local(checks, range(len(checks)), now_ms, outcomes, spent)
        while missing:  # a bucket has one fetch in flight per process at most: wait for it (the timeout bounds it)
            keys = {checks[i].storage_key for i in missing}
            fetching = {future for key, future in self._fetching.items() if key in keys}
            if not fetching:
                break
            await asyncio.wait(fetching)
            missing = self._spend_local(checks, missing, now_ms, outcomes, spent)
        if missing:
            await self._fetch(checks, missing, now_ms, fetch, outcomes, spent)
        return Taken(outcomes, spent)

    def give_back(self, taken: Taken) -> None:
        """The request was rejected after all: its units return to their leases (if these are still current)."""
        for key, lease, cost in taken.spent:
            if self._leases.get(key) is lease:
                lease.left += cost
                lease.spent -= cost

    def _spend_local(self, checks: Sequence[LimitCheck], indexes: Sequence[int], now_ms: int,
                     outcomes: list[LimitOutcome | None], spent: list[tuple[str, Lease, int]]) -> list[int]:
        missing = []
        for i in indexes:
            check = checks[i]
            lease = self._leases.get(check.storage_key)
            if lease is not None and lease.covers(check.cost, now_ms):
                lease.spend(check.cost)
                spent.append((check.storage_key, lease, check.cost))
                outcomes[i] = lease.outcome(check, now_ms)
            elif lease is not None and now_ms < lease.empty_until_ms and check.cost == 1:
                outcomes[i] = lease.rejection(check, now_ms)
            else:
                missing.append(i)
        return missing

    async def _fetch(self, checks: Sequence[LimitCheck], missing: Sequence[int], now_ms: int, fetch: Fetch,
                     outcomes: list[LimitOutcome | None], spent: list[tuple[str, Lease, int]]) -> None:
        wants: dict[str, tuple[LimitCheck, int]] = {}
        for i in missing:  # one lease per bucket, large enough for every check of this request on it
            key = checks[i].storage_key
            if key not in wants:
                needed = sum(checks[j].cost for j in missing if checks[j].storage_key == key)
                wants[key] = (checks[i], max(needed, self.size_for(checks[i], now_ms)))
        done = asyncio.get_running_loop().create_future()
        for key in wants:
            self._fetching[key] = done
        try:
            grants = await fetch(list(wants.values()), now_ms)
        finally:
            for key in wants:
                if self._fetching.get(key) is done:
                    del self._fetching[key]
            done.set_result(None)
        by_key = dict(zip(wants, grants, strict=True))
        for key, answer in by_key.items():
            if answer is not None:
                self._install(key, Lease(left=answer[0], spent=0, granted_ms=now_ms, expires_ms=now_ms + self.ttl_ms,
                                         remaining=answer[1], reset_at_ms=now_ms + answer[2],
                                         empty_until_ms=now_ms + answer[3] if answer[0] == 0 else 0))
        still = self._spend_local(checks, missing, now_ms, outcomes, spent)
        for i in still:
            check = checks[i]
            answer = by_key[check.storage_key]
            if answer is None:
                continue  # the failure mode answers
            # Nothing fits (the bucket's own retry-after), or fewer units than the cost: until the rest fits.
            retry_ms = answer[3] or -(-(check.cost - answer[0]) * check.limit.period_ms // check.limit.limit)
            outcomes[i] = LimitOutcome(key=check.key, limit=check.limit, allowed=False, remaining=answer[1],
                                       reset_after_seconds=answer[2] / 1000, retry_after_seconds=retry_ms / 1000,
                                       failure_mode=check.failure_mode)

    def _install(self, key: str, lease: Lease) -> None:
        leases = self._leases
        if key in leases:
            leases.move_to_end(key)
        elif len(leases) >= self.max_keys:
            leases.popitem(last=False)
        leases[key] = lease
