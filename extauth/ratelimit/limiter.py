"""`RateLimiter`: one call per request, every limit that applies checked in one backend round trip, and a declared
answer per limit when the backend is slow or down.

The backend call is bounded by `timeout_ms` and guarded by a circuit breaker; when it fails, times out or the
breaker is open, each check answers by its failure mode: `open` allows, `closed` rejects (`result.unavailable`:
a 503 rather than a 429), `local` uses an in-process bucket (per process: N processes admit up to N x limit).
Such outcomes are `degraded`. State changes (degraded, recovered) are logged once, not per request; counters are
plain attributes of `stats`.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import structlog

from extauth.breaker import BreakerState, CircuitBreaker
from extauth.clock import Clock
from extauth.metrics.registry import Histogram, RedisMetrics
from extauth.notify import Notify, ignore
from extauth.ratelimit.lease import Grant, LeaseBook, LeaseSource, lease_source_for
from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.model import ALLOWED, LimitCheck, LimitOutcome, RateLimitResult
from extauth.ratelimit.queue import Reservation, Reservations, reservations_for
from extauth.ratelimit.storage import CheckError, Storage, StorageError, SynchronousStorage

log = structlog.get_logger("extauth.ratelimit")
#: The one store operation: a GCRA script call covering every limit of one request.
_OPERATION = "gcra"
#: The leased mode's store operation: one lease script call for the leases one request (or batch) needs.
_LEASE_OPERATION = "lease"
#: Queued mode's store operations: reserving a waiting request's units, and releasing them when it gives up.
_RESERVE_OPERATION, _RELEASE_OPERATION = "reserve", "release"
#: Seconds; a queued request waits at most its limit's max_wait (bounded by Envoy's ext_authz timeout).
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class LimiterStats:
    requests: int = 0            # check() calls with at least one limit
    rejections: int = 0          # requests not allowed
    shadow_rejections: int = 0   # shadow outcomes that would have rejected
    degraded: int = 0            # requests answered (at least partly) by a failure mode
    backend_calls: int = 0       # requests sent to the backend
    backend_errors: int = 0      # of which failed (StorageError or timeout)
    timeouts: int = 0            # of which timed out
    short_circuited: int = 0     # requests not sent because the breaker was open
    batches: int = 0             # backend round trips made by the batcher
    check_errors: int = 0        # requests the backend could not evaluate alone (answered by failure modes)
    lease_calls: int = 0         # lease script calls (leased mode): requests minus these were answered locally
    queued: int = 0              # requests over a queued limit that waited for their reservation, then passed
    queue_refused: int = 0       # requests over a queued limit answered at once (wait beyond max_wait, queue full)
    queue_cancelled: int = 0     # waiters that gave up (Envoy cancelled the Check): their units were released


#: uvloop's timers run at millisecond resolution and may fire up to a millisecond before their time.
_TIMER_SLACK_SECONDS = 0.001
#: A request waiting in the batcher: its checks, its time (ms), its answer, and its deadline (loop time).
_Pending = tuple[Sequence[LimitCheck], int, "asyncio.Future[list[LimitOutcome]]", float]


class _Batcher:
    """Concurrent requests go to the backend in one call, and at most one call is out at a time.

    When no call is out, a request is sent within `window_seconds` (0: at the end of this event-loop turn), so
    at low load batching adds no wait. While a call is out, requests gather and leave together the moment it
    answers: under load the batch grows with the round trip instead of every turn paying its own call (one
    command path, one syscall pair, one task per batch). `max_batch` caps one call; the rest leaves next.

    Each request is answered within `timeout_seconds` of its submission, or fails with TimeoutError (while the
    call it is part of goes on: its connection stays in step). One timer, at the oldest unanswered request's
    deadline, bounds them all: a timer per batch instead of an `asyncio.timeout` per request.
    """

    def __init__(self, storage: Storage, window_seconds: float, max_batch: int, stats: LimiterStats,
                 timeout_seconds: float) -> None:
        self.storage = storage
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self.stats = stats
        self.timeout_seconds = timeout_seconds
        self._pending: list[_Pending] = []
        #: The batch the call out carries (empty when none is out).
        self._sending: list[_Pending] = []
        self._handle: asyncio.Handle | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    async def submit(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        """The request's outcomes; TimeoutError when they are not back within `timeout_seconds`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[LimitOutcome]] = loop.create_future()
        deadline = loop.time() + self.timeout_seconds
        self._pending.append((checks, now_ms, future, deadline))
        if self._deadline is None:
            self._deadline = loop.call_at(deadline, self._expire)
        if self._in_flight is None and self._handle is None:
            self._handle = (loop.call_soon(self._flush) if self.window_seconds <= 0
                            else loop.call_later(self.window_seconds, self._flush))
        return await future

    def _flush(self) -> None:
        self._handle = None
        if self._in_flight is not None:
            return
        batch = [entry for entry in self._pending[:self.max_batch] if not entry[2].done()]  # callers that gave up
        del self._pending[:self.max_batch]
        if batch:
            self._sending = batch
            self._in_flight = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add_done_callback(self._sent)
        elif self._pending:
            self._flush()

    def _sent(self, _: "asyncio.Task[None]") -> None:
        self._in_flight = None
        if self._pending:
            self._flush()

    async def _send(self, batch: list[_Pending]) -> None:
        self.stats.batches += 1
        try:
            results = await self.storage.acquire_many([checks for checks, _, _, _ in batch],
                                                      max(now_ms for _, now_ms, _, _ in batch))
        except Exception as error:
            failure = error if isinstance(error, StorageError) else StorageError(repr(error))
            for _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        else:
            for (_, _, future, _), answer in zip(batch, results, strict=True):
                if future.done():  # timed out or cancelled meanwhile
                    continue
                if isinstance(answer, StorageError):  # this request's own failure: the others have their answers
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        finally:
            self._sending = []
            self._rearm()

    def _expire(self) -> None:
        """A deadline passed: every request past its own fails with TimeoutError; the timer moves to the next."""
        self._deadline = None
        now = asyncio.get_running_loop().time() + _TIMER_SLACK_SECONDS
        for entries in (self._sending, self._pending):
            for _, _, future, deadline in entries:
                if deadline <= now and not future.done():
                    future.set_exception(TimeoutError())
        self._rearm()

    def _rearm(self) -> None:
        """The timer at the oldest unanswered request's deadline (requests arrive, so deadlines fall, in order)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        for entries in (self._sending, self._pending):
            for _, _, future, deadline in entries:
                if not future.done():
                    self._deadline = asyncio.get_running_loop().call_at(deadline, self._expire)
                    return


def _not_evaluated(check: LimitCheck) -> LimitOutcome:
    """An exact check of a request its leased checks already rejected: not sent to the store, nothing consumed."""
    return LimitOutcome(key=check.key, limit=check.limit, allowed=True, remaining=check.limit.limit,
                        reset_after_seconds=0.0, retry_after_seconds=0.0, shadow=check.shadow,
                        failure_mode=check.failure_mode)


class RateLimiter:
    def __init__(self, storage: Storage, clock: Clock, *, timeout_ms: float = 50.0,
                 breaker: CircuitBreaker | None = None, local_fallback: MemoryStorage | None = None,
                 batch_window_us: float | None = None, max_batch: int = 256,
                 metrics: RedisMetrics | None = None, notify: Notify = ignore,
                 leases: LeaseBook | None = None, lease_source: LeaseSource | None = None,
                 queue_max_waiting: int = 100, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 reservations: Reservations | None = None) -> None:
        """`leases`: this process's lease book for `mode: leased` limits (default: one with its defaults);
        `lease_source`: where leases come from (default: the Redis storage; none in process, where leased
        limits are counted exactly). `queue_max_waiting`: queued mode's bound on the Checks waiting for one
        key in this process; `sleep` is how a queued Check waits (injected in tests with the clock);
        `reservations`: where queued Checks reserve (default: the storage's own)."""
        self.storage = storage
        self.clock = clock
        self.timeout_seconds = timeout_ms / 1000
        self.breaker = breaker or CircuitBreaker(clock)
        self.breaker.on_change = self._on_breaker_change
        self.local_fallback = local_fallback or MemoryStorage()
        self.stats = LimiterStats()
        #: Store latency and errors: the server passes the sink its metrics endpoint reads; else a private one.
        self.metrics = metrics or RedisMetrics()
        self._notify = notify
        self.last_error: str | None = None
        self._embedded = storage if isinstance(storage, SynchronousStorage) else None
        self._batcher = (None if batch_window_us is None or self._embedded is not None
                         else _Batcher(storage, batch_window_us / 1e6, max_batch, self.stats, self.timeout_seconds))
        self._lease_source = lease_source or (None if self._embedded is not None else lease_source_for(storage))
        self.leases = leases or LeaseBook()
        self._reservations = reservations or reservations_for(storage)
        self.queue_max_waiting = queue_max_waiting
        self._sleep = sleep
        #: Checks waiting for a reservation, by the key of the limit they wait for.
        self.waiting: dict[str, int] = {}
        self.queue_waits = Histogram(QUEUE_WAIT_BUCKETS)
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    @property
    def degraded(self) -> bool:
        """The backend is considered down (breaker open or probing): failure modes are answering."""
        return self.breaker.state is not BreakerState.CLOSED

    async def warm_up(self, timeout_seconds: float = 3.0) -> bool:
        """Connect before the first Check (Cluster slot discovery alone can outlast the per-call timeout, and a
        cold start under load would otherwise open the breaker). A failure is logged, not fatal: the failure
        modes answer until the store is back."""
        try:
            reachable = await asyncio.wait_for(self.storage.ping(), timeout_seconds)
        except TimeoutError:
            reachable = False
        if not reachable:
            log.warning("ratelimit_backend_unreachable_at_start", backend=self.storage.name)
        return reachable

    async def check(self, checks: Sequence[LimitCheck]) -> RateLimitResult:
        """Evaluate and consume every limit of one request; never raises for backend trouble."""
        if not checks:
            return ALLOWED
        stats = self.stats
        stats.requests += 1
        now_ms = int(self.clock.now() * 1000)
        if self._embedded is not None:
            outcomes = self._embedded.acquire_now([checks], now_ms)[0]
        elif self._lease_source is not None and any(check.leased for check in checks):
            outcomes = await self._from_leases(checks, now_ms)
        else:
            outcomes = await self._from_backend(checks, now_ms)
        result = RateLimitResult(tuple(outcomes))
        if not result.allowed and self._reservations is not None and any(check.max_wait_ms for check in checks):
            result = await self._queue(checks, result)
        if not result.allowed:
            stats.rejections += 1
        for outcome in outcomes:
            if outcome.shadow and not outcome.allowed:
                stats.shadow_rejections += 1
        if result.degraded:
            stats.degraded += 1
        return result

    async def _from_backend(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        stats = self.stats
        if not self.breaker.allow():
            stats.short_circuited += 1
            return self._degrade(checks, now_ms)
        stats.backend_calls += 1
        started = time.perf_counter()
        try:
            if self._batcher is not None:  # which bounds the wait itself, with one timer per batch
                outcomes = await self._batcher.submit(checks, now_ms)
            else:
                async with asyncio.timeout(self.timeout_seconds):
                    outcomes = await self.storage.acquire(checks, now_ms)
        except TimeoutError:
            stats.timeouts += 1
            self.metrics.error(_OPERATION, "timeout")
            self._failed(f"{self.storage.name}: no answer within {self.timeout_seconds * 1000:g} ms")
            return self._degrade(checks, now_ms)
        except CheckError:
            # The backend answered: this request fails alone, by its failure modes, and the breaker sees a success
            # (otherwise one client's bad key could open it and hand everyone's limits to their failure modes).
            stats.check_errors += 1
            self.metrics.error(_OPERATION, "check")
            self.breaker.record_success()
            return self._degrade(checks, now_ms)
        except StorageError as error:
            self.metrics.error(_OPERATION, "storage")
            self._failed(str(error))
            return self._degrade(checks, now_ms)
        self.metrics.observe(_OPERATION, time.perf_counter() - started)
        self.breaker.record_success()
        return outcomes

    async def _from_leases(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        """Leased checks from this process's leases, then the exact ones from the store, all-or-nothing: a
        request a leased check rejects does not reach the store for its exact checks (their outcomes say
        allowed, not evaluated), and one the store rejects gives its leased units back."""
        leased = [check for check in checks if check.leased]
        taken = await self.leases.take(leased, now_ms, self._fetch_leases)
        failed = [check for check, outcome in zip(leased, taken.outcomes, strict=True) if outcome is None]
        by_failure_mode = iter(self._degrade(failed, now_ms))
        leased_outcomes = [outcome or next(by_failure_mode) for outcome in taken.outcomes]
        exact = [check for check in checks if not check.leased]
        if exact and all(outcome.allowed for outcome in leased_outcomes):
            exact_outcomes = await self._from_backend(exact, now_ms)
        else:
            exact_outcomes = [_not_evaluated(check) for check in exact]
        from_leases, from_store = iter(leased_outcomes), iter(exact_outcomes)
        outcomes = [next(from_leases) if check.leased else next(from_store) for check in checks]
        if not RateLimitResult(tuple(outcomes)).allowed:
            self.leases.give_back(taken)
        return outcomes

    async def _queue(self, checks: Sequence[LimitCheck], result: RateLimitResult) -> RateLimitResult:
        """Over a queued limit: reserve the request's units for when it conforms and wait until then, if every
        rejecting limit is queued, that wait is within each one's `max_wait` and fewer than `queue_max_waiting`
        Checks already wait for the key; otherwise the rejection stands (429)."""
        stats = self.stats
        rejected = [(check, outcome) for check, outcome in zip(checks, result.outcomes, strict=True)
                    if not outcome.allowed and not check.shadow]
        if not any(check.max_wait_ms for check, _ in rejected):
            return result  # rejected by limits that do not queue
        if not all(check.max_wait_ms and not check.leased and not outcome.degraded
                   and outcome.retry_after_seconds * 1000 <= check.max_wait_ms for check, outcome in rejected):
            stats.queue_refused += 1
            return result
        key = rejected[0][0].key
        waiting = self.waiting.get(key, 0)
        if waiting >= self.queue_max_waiting:
            stats.queue_refused += 1
            return result
        enforced = [check for check in checks if not check.shadow]
        self.waiting[key] = waiting + 1
        try:
            # Shielded: a Check cancelled while the store reserves cannot tell whether its units were taken, so
            # the reservation finishes on its own and is released if it was made.
            # The wait is counted from now, after the first store call: TAT − now, exactly.
            reserving = asyncio.ensure_future(self._reserve([(check, check.max_wait_ms) for check in enforced],
                                                            int(self.clock.now() * 1000)))
            try:
                reservation = await asyncio.shield(reserving)
            except asyncio.CancelledError:
                stats.queue_cancelled += 1
                reserving.add_done_callback(lambda done: self._release_if_made(done, enforced))
                raise
            if reservation is None or not reservation.reserved:
                stats.queue_refused += 1
                return result
            try:
                await self._sleep(reservation.wait_ms / 1000)
            except asyncio.CancelledError:
                stats.queue_cancelled += 1
                self._release_later(enforced)
                raise
        finally:
            if self.waiting[key] == 1:
                del self.waiting[key]
            else:
                self.waiting[key] -= 1
        stats.queued += 1
        self.queue_waits.observe(reservation.wait_ms / 1000)
        outcomes = tuple(outcome if check.shadow else replace(
            outcome, allowed=True, remaining=max(0, outcome.remaining - check.cost) if outcome.allowed else 0,
            retry_after_seconds=0.0) for check, outcome in zip(checks, result.outcomes, strict=True))
        return RateLimitResult(outcomes, waited_seconds=reservation.wait_ms / 1000)

    async def _reserve(self, checks: Sequence[tuple[LimitCheck, int]], now_ms: int) -> Reservation | None:
        """A reservation under the limiter's timeout and breaker; None when the store cannot make it (the
        request keeps its 429)."""
        if self._reservations is None or not self.breaker.allow():
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reservation = await self._reservations.reserve(checks, now_ms)
        except TimeoutError:
            self.metrics.error(_RESERVE_OPERATION, "timeout")
            self._failed(f"{self.storage.name}: no reservation within {self.timeout_seconds * 1000:g} ms")
            return None
        except CheckError:
            self.metrics.error(_RESERVE_OPERATION, "check")
            self.breaker.record_success()
            return None
        except StorageError as error:
            self.metrics.error(_RESERVE_OPERATION, "storage")
            self._failed(str(error))
            return None
        self.metrics.observe(_RESERVE_OPERATION, time.perf_counter() - started)
        self.breaker.record_success()
        return reservation

    def _release_if_made(self, reserving: "asyncio.Future[Reservation | None]", checks: Sequence[LimitCheck]) -> None:
        if not reserving.cancelled() and reserving.exception() is None:
            reservation = reserving.result()
            if reservation is not None and reservation.reserved:
                self._release_later(checks)

    def _release_later(self, checks: Sequence[LimitCheck]) -> None:
        """Release a cancelled waiter's units in a task of its own (the waiter's task is being cancelled)."""
        reservations = self._reservations
        assert reservations is not None

        async def release() -> None:
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    await reservations.release(checks, int(self.clock.now() * 1000))
            except (TimeoutError, StorageError) as error:
                self.metrics.error(_RELEASE_OPERATION, "timeout" if isinstance(error, TimeoutError) else "storage")
                log.warning("ratelimit_release_failed", backend=self.storage.name, error=str(error) or "timeout")

        task = asyncio.get_running_loop().create_task(release())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _fetch_leases(self, wants: Sequence[tuple[LimitCheck, int]], now_ms: int) -> list[Grant | None]:
        """Leases under the same timeout, breaker and metrics as the exact calls; None answers by failure mode."""
        stats = self.stats
        if not self.breaker.allow():
            stats.short_circuited += 1
            return [None] * len(wants)
        assert self._lease_source is not None
        stats.lease_calls += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                answers = await self._lease_source.fetch(wants, now_ms)
        except TimeoutError:
            stats.timeouts += 1
            self.metrics.error(_LEASE_OPERATION, "timeout")
            self._failed(f"{self.storage.name}: no lease within {self.timeout_seconds * 1000:g} ms")
            return [None] * len(wants)
        except StorageError as error:
            self.metrics.error(_LEASE_OPERATION, "storage")
            self._failed(str(error))
            return [None] * len(wants)
        self.metrics.observe(_LEASE_OPERATION, time.perf_counter() - started)
        self.breaker.record_success()
        for answer in answers:
            if isinstance(answer, StorageError):
                stats.check_errors += isinstance(answer, CheckError)
                self.metrics.error(_LEASE_OPERATION, "check" if isinstance(answer, CheckError) else "storage")
        return [None if isinstance(answer, StorageError) else answer for answer in answers]

    def _failed(self, error: str) -> None:
        self.stats.backend_errors += 1
        self.last_error = error
        self.breaker.record_failure()

    def _degrade(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        """Each check answered by its failure mode; all-or-nothing still holds for the local buckets."""
        closes = any(c.failure_mode == "closed" and not c.shadow for c in checks)
        local_checks = [c for c in checks if c.failure_mode == "local"]
        local: list[LimitOutcome] = []
        if local_checks:
            local = (self.local_fallback.peek(local_checks, now_ms) if closes
                     else self.local_fallback.acquire_now([local_checks], now_ms)[0])
        local_iter = iter(local)
        retry_after = self.breaker.retry_after_seconds or self.breaker.cooldown_seconds
        outcomes = []
        for check in checks:
            if check.failure_mode == "local":
                outcomes.append(replace(next(local_iter), degraded=True))
            else:
                allowed = check.failure_mode == "open"
                outcomes.append(LimitOutcome(
                    key=check.key, limit=check.limit, allowed=allowed, remaining=check.limit.limit if allowed else 0,
                    reset_after_seconds=0.0, retry_after_seconds=0.0 if allowed else retry_after,
                    shadow=check.shadow, degraded=True, failure_mode=check.failure_mode))
        return outcomes

    def _on_breaker_change(self, previous: BreakerState, state: BreakerState) -> None:
        if state is BreakerState.OPEN and previous is BreakerState.CLOSED:
            log.warning("ratelimit_backend_degraded", backend=self.storage.name, error=self.last_error,
                        cooldown_seconds=self.breaker.cooldown_seconds)
            self._notify("ratelimit_backend_degraded", backend=self.storage.name, error=self.last_error)
        elif state is BreakerState.CLOSED:
            log.info("ratelimit_backend_recovered", backend=self.storage.name)
            self._notify("ratelimit_backend_recovered", backend=self.storage.name)

    async def close(self) -> None:
        await self.storage.close()
