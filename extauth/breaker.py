"""Circuit breaker: after `failure_threshold` consecutive failures the backend is not called for `cooldown_seconds`;
then one probe is let through (half-open): success closes the breaker, failure opens it for another cool-down.

An open breaker answers `allow()` with a comparison and a return: a dead backend costs microseconds per request.
"""

from collections.abc import Callable
from enum import StrEnum

from extauth.clock import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, clock: Clock, failure_threshold: int = 3, cooldown_seconds: float = 1.0,
                 on_change: Callable[[BreakerState, BreakerState], None] | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_count = 0
        self._retry_at = 0.0  # monotonic: when OPEN turns HALF_OPEN; in HALF_OPEN, when a lost probe may be replaced

    def allow(self) -> bool:
        """May the backend be called now? In half-open, True for exactly one caller (the probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        now = self.clock.monotonic()
        if now < self._retry_at:
            return False
        self._set(BreakerState.HALF_OPEN)
        self._retry_at = now + self.cooldown_seconds  # a probe that never reports back is replaced after this
        return True

    def record_success(self) -> None:
        self.consecutive_failures = 0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
                self.state is BreakerState.CLOSED and self.consecutive_failures >= self.failure_threshold):
            self._retry_at = self.clock.monotonic() + self.cooldown_seconds
            self.opened_count += 1
            self._set(BreakerState.OPEN)

    @property
    def retry_after_seconds(self) -> float:
        """Until the next probe (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self._retry_at - self.clock.monotonic())

    def _set(self, state: BreakerState) -> None:
        previous, self.state = self.state, state
        if previous is not state and self.on_change is not None:
            self.on_change(previous, state)
