"""Injected time, so expiry, TTLs and cooldowns are tested without sleeping."""

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (token `exp`/`nbf`/`iat` are compared with this)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (TTLs, cooldowns)."""


class SystemClock:
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self._now = now
        self._monotonic = 1000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def set(self, now: float) -> None:
        self._now = now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds
