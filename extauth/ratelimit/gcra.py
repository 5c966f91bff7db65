"""GCRA (generic cell rate algorithm) in exact integer arithmetic; `lua/gcra.lua` is the same algorithm, line for line.

A window `limit` per `period_ms` P has emission interval I = P / limit ms and burst tolerance P: a request of
cost c is allowed when the theoretical arrival time (TAT) after it, `max(TAT, now) + c*I`, is at most `now + P`.
To stay exact for any limit, TAT is kept as whole milliseconds plus a remainder in 1/limit ms (`tat_ms`,
`frac`), and every comparison is made in units of 1/limit ms, where I is exactly P units. Numbers stay far
below 2**53, so Lua's doubles are exact too.

One call evaluates several requests ("groups"), each all-or-nothing: if any enforced check of a group rejects,
none of the group's enforced checks is consumed. A shadow check is consumed when it would itself allow,
independently of the group's verdict. Results per check: (allowed, remaining, reset_after_ms, retry_after_ms).
"""

from collections.abc import Callable, Sequence

from extauth.ratelimit.model import LimitCheck

State = tuple[int, int]  # (tat_ms, frac in 1/limit ms)
Raw = tuple[bool, int, int, int]  # allowed, remaining, reset_after_ms, retry_after_ms


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _backlog(state: State | None, now_ms: int, limit: int) -> int:
    """How far TAT is ahead of now, in 1/limit ms (0 for an empty or fully refilled bucket)."""
    if state is None:
        return 0
    tat_ms, frac = state
    return max(0, (tat_ms - now_ms) * limit + frac)


def evaluate(groups: Sequence[Sequence[LimitCheck]], now_ms: int,
             get: Callable[[str], State | None], put: Callable[[str, State, int], None]) -> list[list[Raw]]:
    """Run GCRA over each group in order against `get`/`put` (put receives the key, the new state and a TTL in ms)."""
    results: list[list[Raw]] = []
    for group in groups:
        pending: dict[str, tuple[State, int]] = {}
        raws: list[Raw] = []
        group_ok = True
        for check in group:
            key, limit, period, cost = check.storage_key, check.limit.limit, check.limit.period_ms, check.cost
            state = pending[key][0] if key in pending else get(key)
            capacity = period * limit
            backlog = _backlog(state, now_ms, limit)
            after = backlog + cost * period
            if after <= capacity:
                new_state = (now_ms + after // limit, after % limit)
                ttl = max(1, _ceil_div(after, limit))
                if check.shadow:
                    put(key, new_state, ttl)
                else:
                    pending[key] = (new_state, ttl)
                raws.append((True, (capacity - after) // period, ttl, 0))
            else:
                if not check.shadow:
                    group_ok = False
                raws.append((False, (capacity - backlog) // period, _ceil_div(backlog, limit),
                             _ceil_div(after - capacity, limit)))
        if group_ok:
            for key, (new_state, ttl) in pending.items():
                put(key, new_state, ttl)
        else:
            # Nothing of this request is consumed: report the room left without it.
            for i, check in enumerate(group):
                if raws[i][0] and not check.shadow:
                    limit, period = check.limit.limit, check.limit.period_ms
                    backlog = _backlog(get(check.storage_key), now_ms, limit)
                    raws[i] = (True, (period * limit - backlog) // period, _ceil_div(backlog, limit), 0)
        results.append(raws)
    return results
