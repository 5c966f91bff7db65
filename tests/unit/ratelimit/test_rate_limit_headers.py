"""The rate-limit response fields, whose texts the phase builds once per set of windows and then reuses."""

from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.ratelimit import Limit, MemoryStorage, RateLimiter
from extauth.ratelimit.model import LimitCheck, LimitOutcome, RateLimitResult
from extauth.ratelimit.phase import HEADER_TEXT_CACHE_SIZE, RateLimitPhase

windows = st.builds(Limit, st.integers(1, 10_000), st.sampled_from([0.5, 1.0, 1.2, 60.0, 3600.0, 86400.0]))
check_sets = st.lists(st.builds(LimitCheck, key=st.sampled_from(["shop/a|sub=x", "shop/b|sub=y", "shop/b|ip=z"]),
                                limit=windows, shadow=st.booleans(),
                                public_name=st.sampled_from(["", "per-subject", "per-ip"])),
                      min_size=1, max_size=4)


def answered(checks: list[LimitCheck], remaining: int) -> RateLimitResult:
    return RateLimitResult(tuple(LimitOutcome(key=check.key, limit=check.limit, allowed=True, remaining=remaining,
                                              reset_after_seconds=0.4, retry_after_seconds=0.0, shadow=check.shadow)
                                 for check in checks))


def fields(phase: RateLimitPhase, checks: list[LimitCheck], remaining: int) -> list[tuple[str, str]]:
    result = answered(checks, remaining)
    return phase.headers(checks, result, result.most_restrictive)


@settings(max_examples=200, deadline=None)
@given(seen=st.lists(check_sets, max_size=6), checks=check_sets, remaining=st.integers(0, 50))
def test_a_phase_that_served_other_windows_answers_as_a_fresh_one(seen, checks, remaining) -> None:
    """Whatever sets of windows a phase answered before, its fields for a set are those a fresh phase gives."""
    phase = RateLimitPhase(RateLimiter(MemoryStorage(), clock=None))  # type: ignore[arg-type]
    for earlier in seen:
        fields(phase, earlier, 3)
    fresh = RateLimitPhase(RateLimiter(MemoryStorage(), clock=None))  # type: ignore[arg-type]
    assert fields(phase, checks, remaining) == fields(fresh, checks, remaining)


def test_the_header_text_cache_stays_bounded() -> None:
    """More distinct sets of windows than the cache holds never grow it past HEADER_TEXT_CACHE_SIZE."""
    phase = RateLimitPhase(RateLimiter(MemoryStorage(), clock=None))  # type: ignore[arg-type]
    for quota in range(1, HEADER_TEXT_CACHE_SIZE * 2):
        checks = [LimitCheck("shop/a|sub=x", Limit(quota, 1.0), public_name="per-subject")]
        assert fields(phase, checks, 0)[0] == ("ratelimit-policy", f'"per-subject/{quota}per1s";q={quota};w=1')
        assert len(phase._header_texts) <= HEADER_TEXT_CACHE_SIZE
