"""Screening: cheap structural checks on every request before any identity or policy work.

Each block names the rule that fired (`screening/<check>` or `<document>/<signature>`) for the audit
trail; the client only learns a generic reason, never its own offending input echoed back.

It runs on every Check, so the clean path is kept short: the checks run cheapest first, each text check
is guarded by a substring test, percent-decoding happens only when there is a `%`, control characters are
found with `bytes.translate` (a C loop over a table) instead of a regex, and the header map is copied out
of the upb message once.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from extauth.decision import Decision
from extauth.documents.screening import Blocks, Limits
from extauth.reasons import Reason
from extauth.request import Request
from extauth.screening.waf import WafEngine

#: C0 controls and DEL, as bytes to delete: a text has one iff its UTF-8 form shrinks (multi-byte UTF-8
#: sequences never contain a byte below 0x80, so only real control characters are removed).
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"
#: The same minus HTAB, which RFC 9110 allows inside a header field value.
_HEADER_CONTROL_BYTES = _CONTROL_BYTES.replace(b"\t", b"")
#: A `..` path segment, ending at `/`, `\`, `;` (a path parameter: `/..;/` is a known bypass) or the end.
_PATH_TRAVERSAL = re.compile(r"(?:^|[/\\])\.\.(?:[/\\;]|$)")
#: In a query: `../` or `..\` anywhere (not as part of `...`), or a bare `..` as a whole value or segment.
_QUERY_TRAVERSAL = re.compile(r"(?:^|[^.])\.\.[/\\]|(?:^|[/\\=&;,:|])\.\.(?:[&;]|$)")
#: Dots and slashes no valid decoder produces but old ones accepted: overlong UTF-8 (`%c0%ae`, `%e0%80%ae`)
#: and IIS `%u` escapes (`%u002e`, `%u2215`), also percent-encoded again.
_EXOTIC_DOT_OR_SLASH = re.compile(
    r"%(?:25)*(?:c0%(?:25)*(?:ae|af|9c)|e0%(?:25)*80%(?:25)*(?:ae|af)|u(?:002e|002f|005c|2215|2216|ff0e|ff0f))",
    re.IGNORECASE,
)
_ENCODED_SLASH = re.compile(r"%(?:25)*(?:2f|5c)", re.IGNORECASE)
#: Percent-decoding rounds: `%252e` is `%2e` once decoded and `.` twice; a third round covers `%25252e`.
_DECODE_ROUNDS = 3

METHODS_RULE = "screening/methods"
MAX_URI_RULE = "screening/max_uri_bytes"
MAX_QUERY_RULE = "screening/max_query_bytes"
MAX_HEADERS_RULE = "screening/max_headers"
MAX_HEADER_RULE = "screening/max_header_bytes"
MAX_HEADERS_BYTES_RULE = "screening/max_headers_bytes"
CONTROL_RULE = "screening/control_characters"
ENCODED_SLASH_RULE = "screening/encoded_slashes"
TRAVERSAL_RULE = "screening/path_traversal"
PATH_PARAMETERS_RULE = "screening/path_parameters"
METHOD_OVERRIDE_RULE = "screening/method_override"
#: Headers that Symfony, Laravel, Rails (Rack::MethodOverride), Express (method-override), ASP.NET and Spring
#: (HiddenHttpMethodFilter reads `_method`) honour in place of the request method.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override", "x-original-method")
_METHOD_OVERRIDE_NAMES = frozenset(METHOD_OVERRIDE_HEADERS)
_METHOD_OVERRIDE_QUERY = re.compile(r"(?:^|[&;])(?:_|%5f)method(?:=|&|;|$)", re.IGNORECASE)
MALFORMED_PATH_RULE = "screening/malformed_path"
HOST_RULE = "screening/host"

#: Client-facing descriptions: generic on purpose, never the offending input.
_DESCRIPTIONS = {
    Reason.METHOD_NOT_ALLOWED: "method not allowed",
    Reason.URI_TOO_LONG: "request URI too long",
    Reason.HEADERS_TOO_LARGE: "request headers too large",
    Reason.CONTROL_CHARACTERS: "control characters in the request",
    Reason.ENCODED_SLASH: "encoded slash in the path",
    Reason.PATH_TRAVERSAL: "path traversal in the request",
    Reason.SIGNATURE_MATCH: "request matches a blocked pattern",
    Reason.PATH_PARAMETERS: "path parameters (';') are not accepted",
    Reason.METHOD_OVERRIDE: "method override is not accepted; send the method itself",
    Reason.MALFORMED_PATH: "the path is not valid percent-encoded UTF-8",
    Reason.INVALID_HOST: "invalid host",
}


@dataclass(frozen=True, slots=True)
class CompiledSignature:
    #: `<document name>/<signature name>`, the rule an audit event names.
    rule: str
    pattern: re.Pattern[str]
    path: bool
    query: bool
    #: Every header value (when `header` is None), or only that header's.
    headers: bool
    header: str | None


def _deny(reason: Reason, rule: str) -> Decision:
    return Decision.deny(reason, _DESCRIPTIONS[reason], rule=rule)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _has_control(text: str, table: bytes = _CONTROL_BYTES) -> bool:
    encoded = text.encode("utf-8", "surrogatepass")
    return len(encoded.translate(None, table)) != len(encoded)


def _decodings(text: str) -> list[str]:
    """Each successive percent-decoding of `text` (not `text` itself), until decoding changes nothing."""
    forms: list[str] = []
    current = text
    while "%" in current and len(forms) < _DECODE_ROUNDS:
        decoded = unquote(current, errors="surrogateescape")
        if decoded == current:
            break
        forms.append(decoded)
        current = decoded
    return forms


class Screener:
    """Compiled screening configuration; `screen` is called once per Check and never raises on any input."""

    __slots__ = ("_blocks", "_header_signatures", "_limits", "_methods", "_path_signatures",
                 "_query_signatures", "signatures", "waf")

    def __init__(self, methods: Iterable[str], limits: Limits, blocks: Blocks,
                 signatures: Sequence[CompiledSignature], waf: WafEngine | None = None) -> None:
        self._methods = frozenset(methods)
        self._limits = limits
        self._blocks = blocks
        self.signatures = tuple(signatures)
        self._path_signatures = tuple(s for s in signatures if s.path)
        self._query_signatures = tuple(s for s in signatures if s.query)
        self._header_signatures = tuple(s for s in signatures if s.headers)
        #: The OWASP CRS through ModSecurity (waf.py), or None when no Screening document asks for it.
        self.waf = waf

    @property
    def methods(self) -> frozenset[str]:
        return self._methods

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def blocks(self) -> Blocks:
        return self._blocks

    def screen(self, request: Request) -> Decision | None:
        """None when the request passes; otherwise the deny, naming the rule that fired."""
        limits, blocks = self._limits, self._blocks
        # 1. method (as sent: HEAD is GET only once it is allowed at all): one set lookup
        if request.wire_method not in self._methods:
            return _deny(Reason.METHOD_NOT_ALLOWED, METHODS_RULE)
        # 2. sizes of the URI and of the header map: lengths only
        path, query = request.wire_path, request.query
        query_bytes = _utf8_length(query)
        uri_bytes = _utf8_length(path) + (query_bytes + 1 if query else 0)
        if uri_bytes > limits.max_uri_bytes:
            return _deny(Reason.URI_TOO_LONG, MAX_URI_RULE)
        if query_bytes > limits.max_query_bytes:
            return _deny(Reason.URI_TOO_LONG, MAX_QUERY_RULE)
        upb_headers = request.headers
        if len(upb_headers) > limits.max_headers:
            return _deny(Reason.HEADERS_TOO_LARGE, MAX_HEADERS_RULE)
        # 3. path and query: short strings, each check behind a substring guard
        blocked = self._screen_target(path, _PATH_TRAVERSAL, blocks.encoded_slashes)
        if blocked is None and query:
            blocked = self._screen_target(query, _QUERY_TRAVERSAL, False)
        if blocked is not None:
            return blocked
        # 3b. the canonical request must exist: one reading of the path and the host (docs/security.md)
        if blocks.path_parameters and ";" in path:
            return _deny(Reason.PATH_PARAMETERS, PATH_PARAMETERS_RULE)
        if "%" in path and not request.path_is_text:
            return _deny(Reason.MALFORMED_PATH, MALFORMED_PATH_RULE)
        if not request.host_is_valid:
            return _deny(Reason.INVALID_HOST, HOST_RULE)
        if blocks.method_override and "method" in query.lower() and _METHOD_OVERRIDE_QUERY.search(query):
            return _deny(Reason.METHOD_OVERRIDE, METHOD_OVERRIDE_RULE)
        # 4. headers: copied out of upb once; sizes and control characters over all values at once
        headers = dict(upb_headers)
        values = "".join(headers.values())
        names_bytes = len("".join(headers))  # Envoy only passes token characters in names: ASCII
        total_bytes = names_bytes + _utf8_length(values)
        if total_bytes > limits.max_header_bytes:  # else no single header can be over
            blocked = self._screen_header_sizes(headers)
            if blocked is not None:
                return blocked
        if total_bytes > limits.max_headers_bytes:
            return _deny(Reason.HEADERS_TOO_LARGE, MAX_HEADERS_BYTES_RULE)
        if blocks.control_characters and _has_control(values, _HEADER_CONTROL_BYTES):
            return _deny(Reason.CONTROL_CHARACTERS, CONTROL_RULE)
        if blocks.method_override and not _METHOD_OVERRIDE_NAMES.isdisjoint(headers):
            return _deny(Reason.METHOD_OVERRIDE, METHOD_OVERRIDE_RULE)
        # 5. signatures: platform teams' regular expressions, in the order they were declared
        canonical = request.path if self._path_signatures else path
        for signature in self._path_signatures:
            search = signature.pattern.search
            if search(path) is not None or (canonical != path and search(canonical) is not None):
                return _deny(Reason.SIGNATURE_MATCH, signature.rule)
        if query:
            for signature in self._query_signatures:
                if signature.pattern.search(query) is not None:
                    return _deny(Reason.SIGNATURE_MATCH, signature.rule)
        for signature in self._header_signatures:
            if _matches_headers(signature, headers):
                return _deny(Reason.SIGNATURE_MATCH, signature.rule)
        return None

    def _screen_target(self, text: str, traversal: re.Pattern[str], encoded_slashes: bool) -> Decision | None:
        """Control characters, encoded slashes (path only) and traversal in the path or the query, raw and decoded."""
        blocks = self._blocks
        percent = "%" in text
        decodings = _decodings(text) if percent else ()
        if blocks.control_characters and (_has_control(text) or any(_has_control(form) for form in decodings)):
            return _deny(Reason.CONTROL_CHARACTERS, CONTROL_RULE)
        if encoded_slashes and percent and _ENCODED_SLASH.search(text):
            return _deny(Reason.ENCODED_SLASH, ENCODED_SLASH_RULE)
        if blocks.path_traversal and (
            (".." in text and traversal.search(text))
            or any(".." in form and traversal.search(form) for form in decodings)
            or (percent and _EXOTIC_DOT_OR_SLASH.search(text))
        ):
            return _deny(Reason.PATH_TRAVERSAL, TRAVERSAL_RULE)
        return None

    def _screen_header_sizes(self, headers: Mapping[str, str]) -> Decision | None:
        """Whether one header (name + value) is over its limit; the total is checked on its own."""
        limit = self._limits.max_header_bytes
        for name, value in headers.items():
            # `:path` is the URI, which max_uri_bytes governs.
            if name != ":path" and len(name) + _utf8_length(value) > limit:
                return _deny(Reason.HEADERS_TOO_LARGE, MAX_HEADER_RULE)
        return None


def _matches_headers(signature: CompiledSignature, headers: Mapping[str, str]) -> bool:
    search = signature.pattern.search
    if signature.header is not None:
        value = headers.get(signature.header)
        return value is not None and search(value) is not None
    return any(search(value) is not None for value in headers.values())
