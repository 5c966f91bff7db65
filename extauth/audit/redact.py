"""What a request may put into the audit stream (docs/audit.md#redaction).

Two steps, both on by default and not switchable off:

1. On the Check path, `Redactor.headers` copies only allowlisted headers (`audit.headers`), and masks those
   whose name says they carry a credential even when an operator allowlisted them.
2. In the writer, `Redactor.scrub` runs over every event before it is rendered:
   it drops or masks the query string, masks credential-shaped text (JWTs, API keys of known formats,
   `Bearer …`, `user:password@` in URLs, session path parameters, `audit.redact_patterns`) wherever
   request-controlled text appears, also when it is percent-encoded, and keeps only a well-formed `traceparent`.

Raw tokens, cookies and API keys are never copied into an event in the first place; the scrub is the
second line for credentials a client puts where nobody expects them.
"""

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extauth.identity.apikey_format import KEY_PATTERN, PREFIX

MASK = "[redacted]"
#: TextScrubber caches the results for up to this many texts of up to SCRUB_CACHE_MAX_TEXT characters each.
SCRUB_CACHE_SIZE = 4096
SCRUB_CACHE_MAX_TEXT = 512
#: Headers that carry credentials, whatever the allowlist says.
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token",
    "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token", "x-goog-iap-jwt-assertion",
    "x-forwarded-client-cert", "x-envoy-peer-metadata",
})
#: A header or query-parameter name that suggests a secret (over-masking is the safe error).
SECRET_NAME = re.compile(r"auth|token|secret|passw|pwd|cookie|session|key|credential|signature|sig$|jwt|"
                         r"^code$|assertion|bearer", re.IGNORECASE)
#: Credentials with a recognisable shape, masked wherever client text appears (`audit.redact_patterns` adds more):
#: (a literal every match contains, so text without it skips the regex; the regex).
CREDENTIAL_PATTERNS = (
    ("eyJ", r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)*"),  # JWT (JWS, JWE): base64url of '{"'
    ("k_", r"[rs]k_(?:live|test)_[A-Za-z0-9]{8,}"),  # Stripe secret and restricted keys
    ("gh", r"gh[oprsu]_[A-Za-z0-9]{20,}"),  # GitHub OAuth, personal, refresh, server and user tokens
    ("github_pat_", r"github_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained personal tokens
    ("xox", r"xox[a-z][.-][A-Za-z0-9.-]{8,}"),  # Slack bot, user, refresh tokens (xoxb-, xoxp-, xoxe.xoxp-…)
    ("xapp-", r"xapp-[A-Za-z0-9-]{8,}"),  # Slack app-level tokens
    ("glpat-", r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab personal tokens
    ("AIza", r"AIza[A-Za-z0-9_-]{35}"),  # Google API keys
    (PREFIX, KEY_PATTERN),  # extauth API keys (docs/apikeys.md)
)
#: `scheme://user:password@` (and `scheme:user@`, backslashes: what URL parsers accept); the last `@` before
#: the host ends the userinfo, as in a URL parser, so a password containing `@` is masked whole.
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[/\\\t]*([^/\\?# \r\n]*)@")
_SCHEME_CREDENTIAL = re.compile(
    r"(?i)(?<![\w.~+-])(?:bearer|basic|digest|negotiate|apikey|token)(?:\s+|%20|\+)([^\s,;&]+)")
_PATH_PARAMETER = re.compile(r";([^/;=?]*)=([^/;?]*)")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
#: Percent-decoding rounds applied when looking for encoded credentials (`%255F` is `_` after two).
_MAX_DECODES = 4
_ASCII_ESCAPE = re.compile(r"%([0-7][0-9A-Fa-f])")
#: Event fields whose text comes from the client and is scrubbed for token-shaped substrings.
_CLIENT_TEXT_FIELDS = ("path", "canonical_path", "host")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Cached: the same few header and parameter names come back on every request."""
    return name.lower() in SECRET_HEADERS or SECRET_NAME.search(name) is not None


class TextScrubber:
    """Masks credential-shaped substrings of client text: `CREDENTIAL_PATTERNS` and the extra patterns,
    `user:password@` in URLs, `Bearer xyz`-style credentials and `;jsessionid=` path parameters.

    The text keeps the form it was sent in; a credential is looked for in it and in its percent-decoded forms
    (`sk%5Flive…`, `%2573k…`: an encoded secret is still the secret), and the characters it was sent as are
    masked."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self._credentials = [(marker, re.compile(pattern)) for marker, pattern in CREDENTIAL_PATTERNS]
        self._any_marker = re.compile("|".join(re.escape(marker) for marker, _ in CREDENTIAL_PATTERNS))
        self._extra = [re.compile(pattern) for pattern in extra_patterns]
        self._cached = functools.lru_cache(maxsize=SCRUB_CACHE_SIZE)(self._scrub)

    def __call__(self, text: str) -> str:
        """Short texts are cached: the same paths, hosts and header values come back on nearly every event (the
        writer's largest cost per event was scanning them again); a long or unique text is scanned as before."""
        return self._cached(text) if len(text) <= SCRUB_CACHE_MAX_TEXT else self._scrub(text)

    def _scrub(self, text: str) -> str:
        spans = self._spans(text)
        view = text
        origin: Sequence[int] = range(len(text) + 1)
        for _ in range(_MAX_DECODES):
            if "%" not in view:
                break
            decoded, step = _decode_ascii_escapes(view)
            if decoded == view:
                break
            view, origin = decoded, [origin[index] for index in step]
            spans.extend((origin[start], origin[end]) for start, end in self._spans(view))
        return _mask(text, spans) if spans else text

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where in `text` the credentials are (start, end)."""
        found: list[tuple[int, int]] = []
        if self._any_marker.search(text):
            for marker, pattern in self._credentials:
                if marker in text:
                    found.extend(match.span() for match in pattern.finditer(text))
        for pattern in self._extra:
            found.extend(match.span() for match in pattern.finditer(text))
        if ":" in text and "@" in text:
            found.extend(match.span(1) for match in _USERINFO.finditer(text))
        if " " in text or "%20" in text or "+" in text:
            found.extend(match.span(1) for match in _SCHEME_CREDENTIAL.finditer(text))
        if ";" in text:
            found.extend(match.span(2) for match in _PATH_PARAMETER.finditer(text) if is_secret_name(match[1]))
        return found


def _decode_ascii_escapes(text: str) -> tuple[str, list[int]]:
    """One round of decoding `%XX` below 0x80 (every credential shape is ASCII), and for each decoded character
    (plus the end) the index in `text` it came from."""
    decoded: list[str] = []
    origin: list[int] = []
    position = 0
    for match in _ASCII_ESCAPE.finditer(text):
        decoded.append(text[position:match.start()])
        origin.extend(range(position, match.start()))
        decoded.append(chr(int(match[1], 16)))
        origin.append(match.start())
        position = match.end()
    decoded.append(text[position:])
    origin.extend(range(position, len(text) + 1))
    return "".join(decoded), origin


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each run of overlapping or touching non-empty spans replaced by one MASK."""
    parts: list[str] = []
    position = 0
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if start > position or not parts:
            parts.append(text[position:start])
            parts.append(MASK)
        position = max(position, end)
    parts.append(text[position:])
    return "".join(parts)


scrub_text = TextScrubber()


def redact_query(query: str, scrub: TextScrubber = scrub_text) -> str:
    """`a=1&token=x` → `a=1&token=[redacted]`: secret-named parameters masked, the rest scrubbed."""
    parts = []
    for part in query.split("&"):
        name, separator, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if separator and is_secret_name(name) else scrub(part))
    return "&".join(parts)


class Redactor:
    def __init__(self, allowed_headers: Iterable[str] = (), include_query: bool = False,
                 redact_patterns: Iterable[str] = ()) -> None:
        allowed = [name.lower() for name in allowed_headers]
        self._plain = tuple(name for name in allowed if not is_secret_name(name))
        self._masked = tuple(name for name in allowed if is_secret_name(name))
        self.include_query = include_query
        self._scrub = TextScrubber(redact_patterns)

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
            return self._scrub(value)
        return f"{self._scrub(base)}?{redact_query(query, self._scrub) if self.include_query else MASK}"

    def scrub(self, event: dict[str, Any]) -> dict[str, Any]:
        for field in _CLIENT_TEXT_FIELDS:
            value = event.get(field)
            if isinstance(value, str):
                event[field] = self._scrub(value)
        query = event.get("query")
        if query is not None:
            if self.include_query and isinstance(query, str):
                event["query"] = redact_query(query, self._scrub)
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
