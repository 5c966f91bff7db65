"""Queued mode (`on_limit: queue`, `max_wait`): a request over its limit waits until GCRA says it conforms
instead of getting a 429, when that wait is within `max_wait`.

The wait is a **reservation**: the request's units are consumed now, for a time ahead (`lua/reserve.lua`,
the same bucket and arithmetic as `gcra.lua`), and the script returns how long until the request conforms:
TAT after it, minus the period, minus now. So waiters are served in the order they reserved, each at its own
exact time, and a request that comes later sees the reserved units and waits behind them (or gets its 429).
A waiter that gives up (Envoy cancels the Check at its timeout, or the client goes away) **releases** its
units (`lua/release.lua`): they are taken back out of each bucket, and the next request may use them.
"""

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Protocol, TypeVar

from extauth.ratelimit.gcra import State
from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.model import LimitCheck
from extauth.ratelimit.storage import CheckError, Storage, StorageError

if TYPE_CHECKING:
    from extauth.ratelimit.redis import RedisStorage

_LUA = resources.files("extauth.ratelimit").joinpath("lua")
RESERVE_LUA = _LUA.joinpath("reserve.lua").read_text()
RELEASE_LUA = _LUA.joinpath("release.lua").read_text()
_T = TypeVar("_T")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _backlog(state: State | None, now_ms: int, limit: int) -> int:
    return 0 if state is None else max(0, (state[0] - now_ms) * limit + state[1])


@dataclass(frozen=True, slots=True)
class Reservation:
    """`reserved`: every check consumed, the request conforms in `wait_ms`; otherwise nothing was consumed and
    `wait_ms` is the wait it would have needed."""

    reserved: bool
    wait_ms: int


#: A check and how far ahead of now it may be reserved (ms): its `max_wait`, or 0 if it must conform now.
Tolerant = tuple[LimitCheck, int]


def reserve(checks: Sequence[Tolerant], now_ms: int, states: dict[str, State | None]
            ) -> tuple[Reservation, dict[str, tuple[State, int]]]:
    """The Python twin of `lua/reserve.lua`: from the buckets' `states`, the reservation and, if it is made, the
    new state and TTL (ms) of each bucket."""
    backlogs: dict[str, tuple[int, int]] = {}  # key -> (backlog after the checks so far, limit)
    wait, fits = 0, True
    for check, tolerance_ms in checks:
        key, limit, period = check.storage_key, check.limit.limit, check.limit.period_ms
        backlog = backlogs[key][0] if key in backlogs else _backlog(states.get(key), now_ms, limit)
        after = backlog + check.cost * period
        ahead = max(0, _ceil_div(after - period * limit, limit))
        wait = max(wait, ahead)
        fits = fits and ahead <= tolerance_ms and check.cost <= limit  # a cost above the limit never conforms
        backlogs[key] = (after, limit)
    if not fits:
        return Reservation(False, wait), {}
    return Reservation(True, wait), {key: ((now_ms + after // limit, after % limit), max(1, _ceil_div(after, limit)))
                                     for key, (after, limit) in backlogs.items()}


def release(check: LimitCheck, now_ms: int, state: State | None) -> tuple[State, int] | None:
    """The Python twin of `lua/release.lua` for one check: the bucket's state and TTL with the check's units
    taken back out, or None when the bucket is then full (the key is deleted)."""
    if state is None:
        return None
    limit = check.limit.limit
    backlog = (state[0] - now_ms) * limit + state[1] - check.cost * check.limit.period_ms
    if backlog <= 0:
        return None
    return (now_ms + backlog // limit, backlog % limit), max(1, _ceil_div(backlog, limit))


class Reservations(Protocol):
    async def reserve(self, checks: Sequence[Tolerant], now_ms: int) -> Reservation:
        """All of one request's enforced checks, all-or-nothing (per Cluster slot on a Cluster: a slot that
        cannot reserve releases the others); raises `StorageError`."""

    async def release(self, checks: Sequence[LimitCheck], now_ms: int) -> None:
        """Take a reservation's units back out; raises `StorageError`."""


class InProcessReservations:
    """Reservations in the in-process buckets (`memory://`)."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage

    async def reserve(self, checks: Sequence[Tolerant], now_ms: int) -> Reservation:
        storage = self.storage
        states = {check.storage_key: storage.bucket(check.storage_key, now_ms) for check, _ in checks}
        reservation, new_states = reserve(checks, now_ms, states)
        for key, (state, ttl_ms) in new_states.items():
            storage.set_bucket(key, state, ttl_ms, now_ms)
        return reservation

    async def release(self, checks: Sequence[LimitCheck], now_ms: int) -> None:
        storage = self.storage
        for check in checks:
            released = release(check, now_ms, storage.bucket(check.storage_key, now_ms))
            if released is None:
                storage.drop_bucket(check.storage_key)
            else:
                storage.set_bucket(check.storage_key, *released, now_ms)


class RedisReservations:
    """Reservations in Redis: one script call per hash slot (one in all on a standalone server)."""

    def __init__(self, storage: "RedisStorage") -> None:
        self.storage = storage
        self._reserve = storage.client.register_script(RESERVE_LUA)
        self._release = storage.client.register_script(RELEASE_LUA)

    def _by_slot(self, checks: Sequence[LimitCheck]) -> list[list[int]]:
        from extauth.ratelimit.redis import slot_of

        slots: dict[int, list[int]] = {}
        for index, check in enumerate(checks):
            slots.setdefault(slot_of(check) if self.storage.cluster else 0, []).append(index)
        return list(slots.values())

    async def reserve(self, checks: Sequence[Tolerant], now_ms: int) -> Reservation:
        calls = [[checks[i] for i in call] for call in self._by_slot([check for check, _ in checks])]
        replies = await self._run(*(self._reserve_call(call, now_ms) for call in calls))
        if any(status < 0 for status, _ in replies):
            made = [call for call, (status, _) in zip(calls, replies, strict=True) if status == 1]
            await self.release([check for call in made for check, _ in call], now_ms)
            raise CheckError(f"{self.storage.name}: the reserve script could not read a key")
        wait = max(wait for _, wait in replies)
        if all(status == 1 for status, _ in replies):
            return Reservation(True, wait)
        made = [call for call, (status, _) in zip(calls, replies, strict=True) if status == 1]
        if made:  # another slot could not: the request waits for nothing, so nothing stays reserved
            await self.release([check for call in made for check, _ in call], now_ms)
        return Reservation(False, wait)

    async def release(self, checks: Sequence[LimitCheck], now_ms: int) -> None:
        calls = [[checks[i] for i in call] for call in self._by_slot(checks)]
        await self._run(*(self._release_call(call, now_ms) for call in calls))

    async def _reserve_call(self, checks: Sequence[Tolerant], now_ms: int) -> tuple[int, int]:
        args: list[int] = [now_ms]
        for check, tolerance_ms in checks:
            args += [check.limit.limit, check.limit.period_ms, check.cost, tolerance_ms]
        status, wait = await self._reserve(keys=[check.storage_key for check, _ in checks], args=args)
        return int(status), int(wait)

    async def _release_call(self, checks: Sequence[LimitCheck], now_ms: int) -> int:
        args: list[int] = [now_ms]
        for check in checks:
            args += [check.limit.limit, check.limit.period_ms, check.cost]
        return int(await self._release(keys=[check.storage_key for check in checks], args=args))

    async def _run(self, *calls: Awaitable[_T]) -> list[_T]:
        from extauth.ratelimit.redis import BACKEND_ERRORS

        storage = self.storage
        try:
            if storage.cluster:
                await storage.client.initialize()
            return await asyncio.gather(*calls)
        except BACKEND_ERRORS as error:
            raise StorageError(f"{storage.name}: {type(error).__name__}: {error}") from error


def reservations_for(storage: Storage) -> Reservations | None:
    """The store's reservations: in process or Redis; any other store cannot queue (its requests get the 429)."""
    if isinstance(storage, MemoryStorage):
        return InProcessReservations(storage)
    from extauth.ratelimit.redis import RedisStorage

    return RedisReservations(storage) if isinstance(storage, RedisStorage) else None
