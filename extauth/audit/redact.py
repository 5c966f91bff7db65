"""What a request may put into the audit stream (docs/audit.md#redaction).

Two steps, both on by default and not switchable off:

1. On the Check path, `Redactor.headers` copies only allowlisted headers (`audit.headers`), and masks those
   whose name says they carry a credential even when an operator allowlisted them.
2. In the writer, `Redactor.scrub` (a structlog processor) runs over every event before it is rendered:
   it drops or masks the query string, masks token-shaped text (JWTs, `Bearer …`, session path
   parameters) wherever request-controlled text appears, and keeps only a well-formed `traceparent`.

Raw tokens, cookies and API keys are never copied into an event in the first place; the scrub is the
second line for credentials a client puts where nobody expects them.
"""

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[redacted]"
#: Headers that carry credentials, whatever the allowlist says.
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token",
    "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token", "x-goog-iap-jwt-assertion",
    "x-forwarded-client-cert", "x-envoy-peer-metadata",
})
#: A header or query-parameter name that suggests a secret (over-masking is the safe error).
SECRET_NAME = re.compile(r"auth|token|secret|passw|pwd|cookie|session|key|credential|signature|sig$|jwt|"
                         r"^code$|assertion|bearer", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)*")
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|digest|negotiate|apikey|token)(\s+|%20|\+)[^\s,;&]+")
_PATH_PARAMETER = re.compile(r";([^/;=?]*)=([^/;?]*)")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
#: Event fields whose text comes from the client and is scrubbed for token-shaped substrings.
_CLIENT_TEXT_FIELDS = ("path", "canonical_path", "host")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Cached: the same few header and parameter names come back on every request."""
    return name.lower() in SECRET_HEADERS or SECRET_NAME.search(name) is not None


def scrub_text(text: str) -> str:
    """Mask token-shaped substrings: JWTs, `Bearer xyz`-style credentials, `;jsessionid=` path parameters."""
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    if " " in text or "%20" in text or "+" in text:
        text = _SCHEME_CREDENTIAL.sub(lambda match: f"{match[1]} {MASK}", text)
    if ";" in text:
        text = _PATH_PARAMETER.sub(
            lambda match: f";{match[1]}={MASK}" if is_secret_name(match[1]) else match[0], text)
    return text


def redact_query(query: str) -> str:
    """`a=1&token=x` → `a=1&token=[redacted]`: secret-named parameters masked, the rest scrubbed."""
    parts = []
    for part in query.split("&"):
        name, separator, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if separator and is_secret_name(name) else scrub_text(part))
    return "&".join(parts)


class Redactor:
    def __init__(self, allowed_headers: Iterable[str] = (), include_query: bool = False) -> None:
        allowed = [name.lower() for name in allowed_headers]
        self._plain = tuple(name for name in allowed if not is_secret_name(name))
        self._masked = tuple(name for name in allowed if is_secret_name(name))
        self.include_query = include_query

    def headers(self, request_headers: Mapping[str, str]) -> dict[str, str]:
        """Allowlisted headers present in the request; credential-bearing ones as `[redacted]` (Check path)."""
        found = {name: request_headers[name] for name in self._plain if name in request_headers}
        for name in self._masked:
            if name in request_headers:
                found[name] = MASK
        return found

    def split_path(self, raw_path: str) -> tuple[str, str | None]:
        """A path as Envoy logs it (with query) → (path, query or None when queries are not audited)."""
        path, separator, query = raw_path.partition("?")
        return path, (query if separator and self.include_query else None)

    def _scrub_header(self, value: str) -> str:
        """A header value holding a URL (Referer, Location) gets the same query policy as the request path."""
        base, separator, query = value.partition("?")
        if not separator:
            return scrub_text(value)
        return f"{scrub_text(base)}?{redact_query(query) if self.include_query else MASK}"

    def __call__(self, logger: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """The structlog processor form of `scrub`."""
        return self.scrub(event)

    def scrub(self, event: dict[str, Any]) -> dict[str, Any]:
        for field in _CLIENT_TEXT_FIELDS:
            value = event.get(field)
            if isinstance(value, str):
                event[field] = scrub_text(value)
        query = event.get("query")
        if query is not None:
            if self.include_query and isinstance(query, str):
                event["query"] = redact_query(query)
            else:
                del event["query"]
        headers = event.get("headers")
        if headers:
            event["headers"] = {name: MASK if is_secret_name(name) else self._scrub_header(str(value))
                                for name, value in headers.items()}
        traceparent = event.get("traceparent")
        if traceparent is not None and not (isinstance(traceparent, str) and _TRACEPARENT.fullmatch(traceparent)):
            event["traceparent"] = "[invalid]"
        return event
