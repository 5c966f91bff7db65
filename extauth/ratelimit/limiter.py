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
from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog

from extauth.breaker import BreakerState, CircuitBreaker
from extauth.clock import Clock
from extauth.metrics.registry import RedisMetrics
from extauth.notify import Notify, ignore
from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.model import ALLOWED, LimitCheck, LimitOutcome, RateLimitResult
from extauth.ratelimit.storage import CheckError, Storage, StorageError, SynchronousStorage

log = structlog.get_logger("extauth.ratelimit")
#: The one store operation: a GCRA script call covering every limit of one request.
_OPERATION = "gcra"


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


class _Batcher:
    """Concurrent requests within `window_seconds` (0: the same event-loop turn) go to the backend in one call."""

    def __init__(self, storage: Storage, window_seconds: float, max_batch: int, stats: LimiterStats) -> None:
        self.storage = storage
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self.stats = stats
        self._pending: list[tuple[Sequence[LimitCheck], int, asyncio.Future[list[LimitOutcome]]]] = []
        self._handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[LimitOutcome]] = loop.create_future()
        self._pending.append((checks, now_ms, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._handle is None:
            self._handle = (loop.call_soon(self._flush) if self.window_seconds <= 0
                            else loop.call_later(self.window_seconds, self._flush))
        return await future

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        batch, self._pending = self._pending, []
        batch = [entry for entry in batch if not entry[2].done()]  # callers that gave up
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Sequence[LimitCheck], int, asyncio.Future[list[LimitOutcome]]]]) -> None:
        self.stats.batches += 1
        try:
            results = await self.storage.acquire_many([checks for checks, _, _ in batch],
                                                      max(now_ms for _, now_ms, _ in batch))
        except Exception as error:
            failure = error if isinstance(error, StorageError) else StorageError(repr(error))
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, _, future), answer in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(answer, StorageError):  # this request's own failure: the others have their answers
                future.set_exception(answer)
            else:
                future.set_result(answer)


class RateLimiter:
    def __init__(self, storage: Storage, clock: Clock, *, timeout_ms: float = 50.0,
                 breaker: CircuitBreaker | None = None, local_fallback: MemoryStorage | None = None,
                 batch_window_us: float | None = None, max_batch: int = 256,
                 metrics: RedisMetrics | None = None, notify: Notify = ignore) -> None:
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
                         else _Batcher(storage, batch_window_us / 1e6, max_batch, self.stats))

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
        else:
            outcomes = await self._from_backend(checks, now_ms)
        result = RateLimitResult(tuple(outcomes))
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
            async with asyncio.timeout(self.timeout_seconds):
                if self._batcher is not None:
                    outcomes = await self._batcher.submit(checks, now_ms)
                else:
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
