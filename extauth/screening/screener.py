"""Screening: cheap structural checks on every request before any identity or policy work.

Each block names the rule that fired (`screening/<check>` or `<document>/<signature>`) for the audit
trail; the client only learns the generic reason, never its own offending input echoed back.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from extauth.config.errors import ConfigError, ConfigIssue
from extauth.decision import Decision
from extauth.policy.loader import LoadedDocument
from extauth.reasons import Reason
from extauth.request import Request
from extauth.screening.model import DEFAULT_METHODS, Blocks, Limits, ScreeningDocument

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A `..` segment, separated by `/` or `\` (after percent-decoding), anywhere in a path or query value.
_TRAVERSAL = re.compile(r"(?:^|[/\\=&])\.\.(?:[/\\&]|$)")
_ENCODED_SLASH = re.compile(r"%(?:25)*(?:2f|5c)", re.IGNORECASE)
#: Percent-decoding rounds: `%252e` is `%2e` once decoded, `.` twice; deeper nesting is treated as hostile.
_DECODE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class _Signature:
    rule: str
    pattern: re.Pattern[str]
    path: bool
    query: bool
    headers: bool
    header: str | None


def _decoded_forms(text: str) -> list[str]:
    """The text and each successive percent-decoding of it, stopping when decoding changes nothing."""
    forms = [text]
    while "%" in forms[-1] and len(forms) <= _DECODE_ROUNDS:
        decoded = unquote(forms[-1], errors="surrogateescape")
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def _has_traversal(text: str) -> bool:
    if ".." not in text and "%" not in text:
        return False
    return any(_TRAVERSAL.search(form) for form in _decoded_forms(text))


def _has_control(text: str) -> bool:
    if _CONTROL.search(text):
        return True
    return "%" in text and any(_CONTROL.search(form) for form in _decoded_forms(text)[1:])


class Screener:
    def __init__(self, methods: Sequence[str], limits: Limits, blocks: Blocks,
                 signatures: Sequence[_Signature]) -> None:
        self._methods = frozenset(methods)
        self._limits = limits
        self._blocks = blocks
        self._signatures = tuple(signatures)
        self._denials: dict[str, Decision] = {}

    def _deny(self, reason: Reason, rule: str, description: str) -> Decision:
        decision = self._denials.get(rule)
        if decision is None:
            decision = self._denials[rule] = Decision.deny(reason, description, rule=rule)
        return decision

    def screen(self, request: Request) -> Decision | None:
        """None when the request passes; otherwise the deny, naming the rule that fired."""
        limits, blocks = self._limits, self._blocks
        if request.method not in self._methods:
            return self._deny(Reason.METHOD_NOT_ALLOWED, "screening/methods", "method not allowed")
        path, query = request.path, request.query
        if len(path) + len(query) + 1 > limits.max_uri_bytes:
            return self._deny(Reason.URI_TOO_LONG, "screening/max_uri_bytes", "request URI too long")
        if len(query) > limits.max_query_bytes:
            return self._deny(Reason.URI_TOO_LONG, "screening/max_query_bytes", "query string too long")
        blocked = self._screen_headers(request)
        if blocked is not None:
            return blocked
        if blocks.control_characters and (_has_control(path) or _has_control(query)):
            return self._deny(Reason.CONTROL_CHARACTERS, "screening/control_characters",
                              "control characters in the request")
        if blocks.encoded_slashes and "%" in path and _ENCODED_SLASH.search(path):
            return self._deny(Reason.ENCODED_SLASH, "screening/encoded_slashes", "encoded slash in the path")
        if blocks.path_traversal and (_has_traversal(path) or _has_traversal(query)):
            return self._deny(Reason.PATH_TRAVERSAL, "screening/path_traversal", "path traversal")
        for signature in self._signatures:
            if self._signature_matches(signature, request):
                return self._deny(Reason.SIGNATURE_MATCH, signature.rule, "request matches a blocked pattern")
        return None

    def _screen_headers(self, request: Request) -> Decision | None:
        limits = self._limits
        headers = request.headers
        if len(headers) > limits.max_headers:
            return self._deny(Reason.HEADERS_TOO_LARGE, "screening/max_headers", "too many headers")
        total = 0
        check_control = self._blocks.control_characters
        for name, value in headers.items():
            size = len(name) + len(value)
            if size > limits.max_header_bytes:
                return self._deny(Reason.HEADERS_TOO_LARGE, "screening/max_header_bytes", "a header is too large")
            total += size
            if check_control and _CONTROL.search(value):
                return self._deny(Reason.CONTROL_CHARACTERS, "screening/control_characters",
                                  "control characters in the request")
        if total > limits.max_headers_bytes:
            return self._deny(Reason.HEADERS_TOO_LARGE, "screening/max_headers_bytes", "headers too large")
        return None

    @staticmethod
    def _signature_matches(signature: _Signature, request: Request) -> bool:
        search = signature.pattern.search
        if signature.path and search(request.path):
            return True
        if signature.query and request.query and search(request.query):
            return True
        if signature.headers:
            if signature.header is not None:
                value = request.headers.get(signature.header)
                return value is not None and search(value) is not None
            return any(search(value) for value in request.headers.values())
        return False


def compile_screening(documents: Sequence[LoadedDocument[ScreeningDocument]]) -> Screener:
    """Merge every Screening document (defaults where none sets a part); errors name file:line."""
    issues: list[ConfigIssue] = []
    chosen: dict[str, tuple[LoadedDocument[ScreeningDocument], object]] = {}
    signatures: list[_Signature] = []
    seen_rules: dict[str, LoadedDocument[ScreeningDocument]] = {}
    for loaded in documents:
        document = loaded.document
        for part in ("methods", "limits", "blocks"):
            value = getattr(document, part)
            if value is None:
                continue
            if part in chosen:
                issues.append(loaded.issue((part,), part, f"already set in {chosen[part][0].file}; "
                                           "only one Screening document may set it"))
            else:
                chosen[part] = (loaded, value)
        for index, signature in enumerate(document.signatures):
            rule = f"{document.metadata.name}/{signature.name}"
            if rule in seen_rules:
                issues.append(loaded.issue(("signatures", index, "name"), f"signatures[{index}].name",
                                           f"signature {rule!r} already defined in {seen_rules[rule].file}"))
            seen_rules[rule] = loaded
            try:
                pattern = re.compile(signature.pattern)
            except re.error as error:
                issues.append(loaded.issue(("signatures", index, "pattern"), f"signatures[{index}].pattern",
                                           f"invalid regular expression: {error}"))
                continue
            targets = set(signature.targets)
            signatures.append(_Signature(rule, pattern, "path" in targets, "query" in targets,
                                         "headers" in targets, signature.header))
    if issues:
        raise ConfigError(issues)
    return Screener(
        methods=chosen["methods"][1] if "methods" in chosen else DEFAULT_METHODS,  # type: ignore[arg-type]
        limits=chosen["limits"][1] if "limits" in chosen else Limits(),  # type: ignore[arg-type]
        blocks=chosen["blocks"][1] if "blocks" in chosen else Blocks(),  # type: ignore[arg-type]
        signatures=signatures,
    )
