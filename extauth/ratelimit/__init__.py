"""Rate limiting: GCRA in Redis (standalone or Cluster) or in process, with failure modes, a breaker and shadow mode."""

from extauth.breaker import BreakerState, CircuitBreaker
from extauth.ratelimit.backends import open_storage
from extauth.ratelimit.limiter import LimiterStats, RateLimiter
from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.model import FailureMode, Limit, LimitCheck, LimitOutcome, RateLimitResult
from extauth.ratelimit.storage import CheckError, Storage, StorageError

__all__ = [
    "BreakerState", "CheckError", "CircuitBreaker", "FailureMode", "Limit", "LimitCheck", "LimitOutcome",
    "LimiterStats", "MemoryStorage", "RateLimitResult", "RateLimiter", "Storage", "StorageError", "open_storage",
]
