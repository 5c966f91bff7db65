"""The circuit breaker's state machine, on an injected clock."""

from extauth.breaker import BreakerState, CircuitBreaker
from extauth.clock import ManualClock


def opened(clock: ManualClock) -> CircuitBreaker:
    breaker = CircuitBreaker(clock, failure_threshold=3, cooldown_seconds=2.0)
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    return breaker


def test_it_opens_after_the_threshold_of_consecutive_failures():
    """Two failures keep it closed; the third opens it and calls stop."""
    breaker = CircuitBreaker(ManualClock(), failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()


def test_a_success_resets_the_count_of_consecutive_failures():
    """Failures separated by a success do not add up."""
    breaker = CircuitBreaker(ManualClock(), failure_threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_after_the_cooldown_exactly_one_probe_goes_through():
    """Half-open lets one caller probe; everyone else still fails fast until the probe reports."""
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(1.9)
    assert not breaker.allow()
    assert breaker.retry_after_seconds > 0
    clock.advance(0.1)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert [breaker.allow() for _ in range(5)] == [False] * 5


def test_a_successful_probe_closes_it():
    """The backend answered: back to closed, calls flow again."""
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(2)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.retry_after_seconds == 0


def test_a_failed_probe_opens_it_for_another_cooldown():
    """The backend is still down: open again, the next probe one cool-down later."""
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(2)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.advance(2)
    assert breaker.allow()


def test_a_probe_that_never_reports_back_is_replaced_after_a_cooldown():
    """A cancelled probe cannot wedge the breaker half-open forever."""
    clock = ManualClock()
    breaker = opened(clock)
    clock.advance(2)
    assert breaker.allow()
    clock.advance(2)
    assert breaker.allow()


def test_transitions_are_reported_once_each():
    """`on_change` sees closed→open→half_open→closed, not one event per call."""
    clock = ManualClock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(clock, failure_threshold=1, cooldown_seconds=1,
                             on_change=lambda old, new: changes.append((old.value, new.value)))
    breaker.record_failure()
    for _ in range(10):
        breaker.allow()
    clock.advance(1)
    breaker.allow()
    breaker.record_success()
    breaker.record_success()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert breaker.opened_count == 1
