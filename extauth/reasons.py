"""Stable reason codes, shared by responses, audit events and (later) metric labels.

A reason code is part of the public contract: SREs grep for it and dashboards group by it,
so values never change once released; new failure kinds get new codes.
"""

from enum import StrEnum


class Reason(StrEnum):
    # allowed
    OK = "ok"
    PUBLIC_ROUTE = "public_route"
    #: An OPTIONS preflight on a route with `cors_preflight: true`, allowed without credentials.
    CORS_PREFLIGHT = "cors_preflight"
    # authentication (401)
    MISSING_TOKEN = "missing_token"
    MALFORMED_TOKEN = "malformed_token"
    TOKEN_TOO_LARGE = "token_too_large"
    DISALLOWED_ALGORITHM = "disallowed_algorithm"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    INVALID_SIGNATURE = "invalid_signature"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ISSUED_IN_FUTURE = "token_issued_in_future"
    INVALID_AUDIENCE = "invalid_audience"
    INVALID_ISSUER = "invalid_issuer"
    MISSING_CLAIM = "missing_claim"
    #: The `sub` cannot be vouched for unchanged (control characters, surrounding whitespace, too long, not a
    #: string) or reads as another provider's qualified identity.
    INVALID_SUBJECT = "invalid_subject"
    #: An API key that is not `eak_…` with a matching checksum (docs/apikeys.md): refused without a store lookup.
    MALFORMED_API_KEY = "malformed_api_key"
    #: A well-formed API key whose digest is not in the store.
    UNKNOWN_API_KEY = "unknown_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    REVOKED_API_KEY = "revoked_api_key"
    #: An API key and a token in one request: which one the upstream would believe is not ours to guess.
    MULTIPLE_CREDENTIALS = "multiple_credentials"
    #: The introspection endpoint answered `active: false` for an opaque token (RFC 7662).
    INACTIVE_TOKEN = "inactive_token"
    #: A `preset: kubernetes` token whose `kubernetes.io` claim does not name a namespace and service account
    #: that agree with its `sub`.
    INVALID_SERVICE_ACCOUNT = "invalid_service_account"
    # request screening (4xx before any identity work)
    METHOD_NOT_ALLOWED = "method_not_allowed"
    URI_TOO_LONG = "uri_too_long"
    HEADERS_TOO_LARGE = "headers_too_large"
    PATH_TRAVERSAL = "path_traversal"
    CONTROL_CHARACTERS = "control_characters"
    ENCODED_SLASH = "encoded_slash"
    SIGNATURE_MATCH = "signature_match"
    #: The OWASP Core Rule Set's anomaly score reached the threshold (docs/waf.md).
    WAF_BLOCKED = "waf_blocked"
    #: `;parameters` in a path segment, which upstreams disagree about (see docs/security.md).
    PATH_PARAMETERS = "path_parameters"
    #: A method-override header or `_method` parameter: the upstream would serve another method than the one decided.
    METHOD_OVERRIDE = "method_override"
    #: The path does not percent-decode to UTF-8 text.
    MALFORMED_PATH = "malformed_path"
    #: `:authority` is not a host name, IPv4 or bracketed IPv6 literal with an optional port.
    INVALID_HOST = "invalid_host"
    # authorization (403)
    NO_MATCHING_ROUTE = "no_matching_route"
    FORBIDDEN = "forbidden"
    DENIED_BY_RULE = "denied_by_rule"
    #: 400: an allow rule holds for some values of a repeated header or query parameter and not for others.
    AMBIGUOUS_REQUEST = "ambiguous_request"
    # rate limiting
    RATE_LIMITED = "rate_limited"
    #: The limit store is unreachable and the limit is declared `failure_mode: closed`.
    RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"
    # service state (503 / 500)
    KEYS_UNAVAILABLE = "keys_unavailable"
    #: The introspection endpoint failed, timed out or its breaker is open: opaque tokens cannot be judged.
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    NOT_READY = "not_ready"
    INTERNAL_ERROR = "internal_error"
    #: Envoy gave up (its ext_authz timeout) before we answered; recorded so the audit trail has no gaps.
    CHECK_CANCELLED = "check_cancelled"
