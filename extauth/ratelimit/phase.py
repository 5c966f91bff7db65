"""Rate-limit phase: after a request is allowed, count it against the limits that apply.

Rejected: 429 with `Retry-After` (or 503 when the store is down and the limit fails closed). Either way the
client gets the IETF rate-limit fields (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` lists
every enforced window, `RateLimit` gives the most restrictive one's remaining quota and reset time.
"""

import math
from dataclasses import replace

from extauth.decision import Decision
from extauth.ratelimit.limiter import RateLimiter
from extauth.ratelimit.model import LimitCheck, LimitOutcome, RateLimitResult
from extauth.ratelimit.plan import RateLimitPlan
from extauth.reasons import Reason
from extauth.request import Request


def _item(check: LimitCheck) -> str:
    """A structured-field item name: the limit's public name (never the key values), plus its window."""
    name = check.public_name or check.key.partition("|")[0]
    return f'"{name}/{check.limit.limit}per{_seconds(check.limit.period_seconds)}s"'


def _seconds(value: float) -> int:
    return max(0, math.ceil(value))


#: Distinct sets of enforced windows whose header texts a phase keeps (a policy has a few); emptied when full.
HEADER_TEXT_CACHE_SIZE = 1024
#: What a set of enforced windows' header texts depend on: each window's item name, quota and period.
_Signature = tuple[tuple[str, int, float], ...]


def _header_texts(enforced: list[LimitCheck]) -> tuple[str, tuple[str, ...]]:
    """The `RateLimit-Policy` value of `enforced` and each window's item (its name and window)."""
    items = tuple(_item(check) for check in enforced)
    policy = ", ".join(f"{item};q={check.limit.limit};w={_seconds(check.limit.period_seconds)}"
                       for item, check in zip(items, enforced, strict=True))
    return policy, items


def _audit(outcome: LimitOutcome | None, result: RateLimitResult) -> dict[str, object]:
    info: dict[str, object] = {"degraded": result.degraded}
    if outcome is not None:
        info.update(key=outcome.key, limit=outcome.limit.limit, period_seconds=outcome.limit.period_seconds,
                    remaining=outcome.remaining)
    if result.waited_seconds:
        info["waited_seconds"] = result.waited_seconds
    if result.shadow_rejections:
        info["shadow_rejections"] = sorted({o.key for o in result.shadow_rejections})
    return info


class RateLimitPhase:
    def __init__(self, limiter: RateLimiter, headers_on_allow: bool = True) -> None:
        self.limiter = limiter
        self._headers_on_allow = headers_on_allow
        #: Header texts by the windows they describe: built once per set of windows, not per request.
        self._header_texts: dict[_Signature, tuple[str, tuple[str, ...]]] = {}

    def headers(self, checks: list[LimitCheck], result: RateLimitResult,
                most: LimitOutcome | None) -> list[tuple[str, str]]:
        """`RateLimit-Policy` (every enforced window), `RateLimit` (`most`, the most restrictive outcome) and, when
        rejected, `Retry-After`."""
        enforced = [check for check in checks if not check.shadow]
        if not enforced or most is None:
            return []
        signature = tuple((check.public_name or check.key.partition("|")[0], check.limit.limit,
                           check.limit.period_seconds) for check in enforced)
        texts = self._header_texts.get(signature)
        if texts is None:
            if len(self._header_texts) >= HEADER_TEXT_CACHE_SIZE:
                self._header_texts.clear()
            texts = self._header_texts[signature] = _header_texts(enforced)
        policy, items = texts
        deciding = next(index for index, check in enumerate(enforced)
                        if check.key == most.key and check.limit == most.limit)
        headers = [("ratelimit-policy", policy),
                   ("ratelimit", f"{items[deciding]};r={most.remaining};t={_seconds(most.reset_after_seconds)}")]
        if not result.allowed:
            headers.append(("retry-after", str(max(1, _seconds(result.retry_after_seconds)))))
        return headers

    async def apply(self, plan: RateLimitPlan, request: Request, decision: Decision) -> Decision:
        checks = plan.checks_for(request, decision)
        if not checks:
            return decision
        result = await self.limiter.check(checks)
        most = result.most_restrictive
        headers = self.headers(checks, result, most)
        audit = _audit(most, result)
        if result.allowed:
            decision.rate_limit = audit
            if self._headers_on_allow:
                decision.client_headers.extend(headers)
            return decision
        if result.unavailable:
            reason, description = Reason.RATE_LIMIT_UNAVAILABLE, "rate limiting is unavailable"
        else:
            reason, description = Reason.RATE_LIMITED, "rate limit exceeded"
        return replace(decision, allowed=False, reason=reason, description=description, upstream_headers=[],
                       client_headers=headers, rate_limit=audit)
