"""What the caller asks (`LimitCheck`) and what the limiter answers (`LimitOutcome`, `RateLimitResult`)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

FailureMode = Literal["open", "closed", "local"]
FAILURE_MODES: tuple[FailureMode, ...] = ("open", "closed", "local")
#: `exact`: every request is counted in the store; `leased`: in units leased from it (lease.py).
LimitMode = Literal["exact", "leased"]
# GCRA works in 1/limit ms (see gcra.py); these bounds keep Lua's doubles exact.
MAX_LIMIT = 10_000_000
MAX_CAPACITY = 2**52
#: A key's bound in UTF-8 bytes; policy keys stay far below it (at most 8 parts, each value at most 64 characters).
MAX_KEY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Limit:
    """`limit` requests per `period_seconds`, enforced with GCRA; the burst equals `limit`."""

    limit: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.period_ms < 1:
            raise ValueError(f"period_seconds must be at least 0.001, got {self.period_seconds}")
        if self.limit > MAX_LIMIT or self.limit * self.period_ms > MAX_CAPACITY:
            raise ValueError(f"{self.limit} per {self.period_seconds}s is beyond the exact range of the algorithm")

    @property
    def period_ms(self) -> int:
        """The period in whole milliseconds: the resolution of every backend."""
        return round(self.period_seconds * 1000)


def _encodable(key: str) -> bool:
    try:
        return len(key.encode()) <= MAX_KEY_BYTES
    except UnicodeEncodeError:
        return False


def has_hash_tag(key: str) -> bool:
    """Redis Cluster's rule: the text between the first `{` and the next `}`, if non-empty, decides the slot."""
    start = key.find("{")
    return start >= 0 and key.find("}", start + 2) > start


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit applied to one request; `key` is composed by the caller (e.g. `demo/api/per-subject|sub=alice`).

    A key that is not valid UTF-8 (a lone surrogate) or longer than `MAX_KEY_BYTES` is refused here, before it
    can reach a batch that it would fail as a whole. `public_name` is what clients see in the rate-limit
    response fields (default: the key up to its first `|`).
    """

    key: str
    limit: Limit
    cost: int = 1
    failure_mode: FailureMode = "closed"
    shadow: bool = False
    public_name: str = ""
    mode: LimitMode = "exact"
    #: Queued mode (`on_limit: queue`): over the limit, wait up to this long for the request to conform (0: 429).
    max_wait_ms: int = 0

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a limit key must not be empty")
        if not (self.key.isascii() and len(self.key) <= MAX_KEY_BYTES) and not _encodable(self.key):
            raise ValueError(f"a limit key must be valid UTF-8 of at most {MAX_KEY_BYTES} bytes")
        if self.cost < 1:
            raise ValueError(f"cost must be at least 1, got {self.cost}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")
        if self.failure_mode not in FAILURE_MODES:
            raise ValueError(f"failure_mode must be one of {FAILURE_MODES}, got {self.failure_mode!r}")

    @property
    def leased(self) -> bool:
        """Counted from this process's lease (a shadow check is always exact: it reports, so it counts exactly)."""
        return self.mode == "leased" and not self.shadow

    @property
    def storage_key(self) -> str:
        """`rl:{<key>}:<limit>/<period_ms>`: the hash tag puts every window of one key in one Cluster slot.

        A key that already carries a Redis hash tag (`{...}`, non-empty) keeps it: `api|{sub=alice}` and
        `admin|{sub=alice}` then share a slot, so they stay all-or-nothing together on a Cluster too.
        """
        tagged = self.key if has_hash_tag(self.key) else "{" + self.key + "}"
        return f"rl:{tagged}:{self.limit.limit}/{self.limit.period_ms}"


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    """The answer for one check.

    `allowed` is this limit's own verdict (for a shadow check: whether it would have allowed). `remaining` is
    what is left after this request (or, when the request was rejected, what is left without it);
    `reset_after_seconds` is the time until the bucket is full again; `retry_after_seconds` is 0 when allowed.
    `degraded` means the backend did not answer and the check's failure mode did.
    """

    key: str
    limit: Limit
    allowed: bool
    remaining: int
    reset_after_seconds: float
    retry_after_seconds: float
    shadow: bool = False
    degraded: bool = False
    failure_mode: FailureMode = "closed"

    @property
    def enforced(self) -> bool:
        return not self.shadow

    @classmethod
    def from_backend(cls, check: LimitCheck, raw: Sequence[int]) -> "LimitOutcome":
        """The outcome of `check` from the four integers a backend returns per check."""
        allowed, remaining, reset_ms, retry_ms = raw
        return cls(key=check.key, limit=check.limit, allowed=bool(allowed), remaining=int(remaining),
                   reset_after_seconds=reset_ms / 1000, retry_after_seconds=retry_ms / 1000,
                   shadow=check.shadow, failure_mode=check.failure_mode)


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """Every outcome of one request's checks."""

    outcomes: tuple[LimitOutcome, ...] = ()
    allowed: bool = field(init=False)
    #: Queued mode: how long the request waited for its reservation before it was allowed.
    waited_seconds: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", all(o.allowed for o in self.outcomes if not o.shadow))

    @classmethod
    def of(cls, outcomes: Sequence[LimitOutcome]) -> "RateLimitResult":
        return cls(tuple(outcomes))

    @property
    def shadow_rejections(self) -> tuple[LimitOutcome, ...]:
        """Shadow checks that would have rejected this request (reported, not enforced)."""
        return tuple(o for o in self.outcomes if o.shadow and not o.allowed)

    @property
    def rejections(self) -> tuple[LimitOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.shadow and not o.allowed)

    @property
    def degraded(self) -> bool:
        """Some outcome was answered by a failure mode rather than the backend."""
        return any(o.degraded for o in self.outcomes)

    @property
    def unavailable(self) -> bool:
        """Rejected only because the backend is down and limits fail closed (a 503, not a 429).

        A rejection by a real count (the backend's, or a `local` bucket's) makes it a 429 instead.
        """
        rejections = self.rejections
        return bool(rejections) and all(o.degraded and o.failure_mode == "closed" for o in rejections)

    @property
    def most_restrictive(self) -> LimitOutcome | None:
        """The enforced outcome for response headers: the rejection with the longest wait, else the least room left."""
        enforced = [o for o in self.outcomes if not o.shadow]
        if not enforced:
            return None
        rejected = [o for o in enforced if not o.allowed]
        if rejected:
            return max(rejected, key=lambda o: o.retry_after_seconds)
        return min(enforced, key=lambda o: (o.remaining, -o.reset_after_seconds))

    @property
    def retry_after_seconds(self) -> float:
        return max((o.retry_after_seconds for o in self.rejections), default=0.0)


ALLOWED = RateLimitResult()
