"""The outcome of the Check pipeline, before it is rendered as a CheckResponse."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from extauth.identity.principal import Principal
from extauth.reasons import Reason

_STATUS_BY_REASON = {
    Reason.OK: 200,
    Reason.PUBLIC_ROUTE: 200,
    Reason.CORS_PREFLIGHT: 200,
    Reason.METHOD_NOT_ALLOWED: 405,
    Reason.URI_TOO_LONG: 414,
    Reason.HEADERS_TOO_LARGE: 431,
    Reason.PATH_TRAVERSAL: 400,
    Reason.CONTROL_CHARACTERS: 400,
    Reason.ENCODED_SLASH: 400,
    Reason.SIGNATURE_MATCH: 403,
    Reason.WAF_BLOCKED: 403,
    Reason.PATH_PARAMETERS: 400,
    Reason.METHOD_OVERRIDE: 400,
    Reason.MALFORMED_PATH: 400,
    Reason.INVALID_HOST: 400,
    Reason.RATE_LIMITED: 429,
    Reason.RATE_LIMIT_UNAVAILABLE: 503,
    Reason.NO_MATCHING_ROUTE: 403,
    Reason.FORBIDDEN: 403,
    Reason.DENIED_BY_RULE: 403,
    Reason.AMBIGUOUS_REQUEST: 400,
    Reason.KEYS_UNAVAILABLE: 503,
    Reason.INTROSPECTION_UNAVAILABLE: 503,
    Reason.NOT_READY: 503,
    Reason.INTERNAL_ERROR: 500,
    Reason.CHECK_CANCELLED: 503,
}


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: Reason
    #: Client-safe explanation: goes into the JSON body and `WWW-Authenticate`; never internals or secrets.
    description: str = ""
    principal: Principal | None = None
    #: `policy/route/rule` that decided, or the route alone when no rule did.
    rule: str | None = None
    route: str | None = None
    policy_version: str | None = None
    upstream_headers: list[tuple[str, str]] = field(default_factory=list)
    #: Headers for the client's response (rate-limit fields, Retry-After), on allow and on deny.
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    #: Path parameters of the matched route (`{tenant}` -> `acme`), for rate-limit keys.
    params: Mapping[str, str] = field(default_factory=dict)
    #: Set by the rate-limit phase for the audit event: {degraded, key, limit, period_seconds, remaining} and
    #: `shadow_rejections` when any; None when unlimited.
    rate_limit: dict[str, object] | None = None
    #: Set when WAF rules matched (blocked, or in detect mode would have): the audit event's `waf` object.
    waf: dict[str, object] | None = None

    @property
    def status(self) -> int:
        """The HTTP status the client sees; every authentication failure not listed is a 401."""
        return _STATUS_BY_REASON.get(self.reason, 401)

    @property
    def is_authentication_failure(self) -> bool:
        return self.status == 401

    @classmethod
    def deny(cls, reason: Reason, description: str, **details: object) -> "Decision":
        return cls(False, reason, description, **details)  # type: ignore[arg-type]
