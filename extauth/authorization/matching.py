"""Route matching, compiled once: which resource a route covers, which methods it admits, and how specific it is.

Paths are matched on the canonical request (extauth/request.py, docs/security.md): `;parameters` dropped,
percent-decoded once, no trailing slash, case-insensitive unless the route opts out, and a literal last segment
`orders` also covers `orders.json` (Spring-style suffixes) unless the route says `extensions: exact`.

`CompiledRoute.match(request)` is the hot path: it returns the bound parameters (a shared empty mapping when
there are none) or None. `CompiledRoute.mismatch(request)` says in words why a route does not match, for
`extauth explain`; it is never called while serving.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from extauth.conditions.params import NO_PARAMS, Params
from extauth.documents import syntax
from extauth.documents.policy import PathMatch, RouteMatch
from extauth.request import Request, canonical_method, canonical_segments, fold_case

#: Orders routes from most to least specific (compared as tuples, larger first); see `CompiledRoute.specificity`.
Specificity = tuple[int, ...]
_KIND_RANK = {"exact": 3, "template": 2, "regex": 2, "prefix": 1}
_REGEX_LITERAL_PREFIX = re.compile(r"\^?((?:/[A-Za-z0-9_~-]+)*)/")


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: str
    text: str
    #: request → bound parameters, or None when the path does not match.
    match: Callable[[Request], Params | None]
    #: (literal segments, bound segments, kind rank): more literal text is more specific.
    specificity: Specificity
    #: The first literal segment (folded, without any extension), for the route index; None if not literal.
    first_segment: str | None


def _pattern_segments(text: str, case_sensitive: bool) -> tuple[str, ...]:
    segments = canonical_segments(text) or tuple(text.split("/"))
    return segments if case_sensitive else tuple(fold_case(segment) for segment in segments)


def _literal_matches(literal: str, segment: str, last: bool, extensions: bool) -> bool:
    """`orders` matches `orders`, and as the request's last segment also `orders.json`, `orders.`, `orders.x.y`:
    the same resource to an upstream with suffix matching (a literal that has a dot itself matches exactly).
    Trailing dots and spaces never make another resource: IIS drops them (`tenants./` is `tenants/`)."""
    if literal == segment:
        return True
    if extensions and last and "." not in literal:
        segment = segment.partition(".")[0]
    return segment.rstrip(". ") == literal


def compile_path(path: PathMatch) -> PathMatcher:
    case_sensitive, extensions = path.case_sensitive, path.extensions == "same_resource"

    def segments_of(request: Request) -> tuple[str, ...]:
        return request.path_segments if case_sensitive else request.folded_segments

    if path.exact is not None or path.prefix is not None:
        prefix = path.exact is None
        pattern = _pattern_segments(path.prefix if prefix else path.exact, case_sensitive)  # type: ignore[arg-type]
        if prefix and pattern[-1] == "":
            pattern = pattern[:-1]  # `/` and `/public/` are directories: `('',)` and `('', 'public')`
        count = len(pattern)
        last_literal = pattern[-1]

        def match(request: Request) -> Params | None:
            parts = segments_of(request)
            if len(parts) < count or (not prefix and len(parts) != count):
                return None
            for index in range(count - 1):
                part = parts[index]
                if part != pattern[index] and part.rstrip(". ") != pattern[index]:
                    return None
            return NO_PARAMS if _literal_matches(last_literal, parts[count - 1], len(parts) == count,
                                                 extensions) else None

        literals = count - 1
        kind = "prefix" if prefix else "exact"
        return PathMatcher(kind, path.prefix if prefix else path.exact, match,  # type: ignore[arg-type]
                           (literals, literals, _KIND_RANK[kind]), _index_key(pattern))
    if path.template is not None:
        template = syntax.parse_template(path.template)
        literal_count = sum(1 for segment in template.segments[1:] if segment is not None)
        bound = len(template.segments) - 1
        first = template.segments[1] if len(template.segments) > 1 else None
        return PathMatcher("template", path.template,
                           _template_matcher(template, case_sensitive, extensions, segments_of),
                           (literal_count, bound, _KIND_RANK["template"] if template.rest is None else 1),
                           None if first is None else _index_key(("", fold_case(first))))
    assert path.regex is not None
    regex = re.compile(path.regex, 0 if case_sensitive else re.IGNORECASE)

    def regex_match(request: Request) -> Params | None:
        found = regex.fullmatch(request.path)
        if found is None:
            return None
        return {name: value or "" for name, value in found.groupdict().items()} if regex.groupindex else NO_PARAMS

    leading = _REGEX_LITERAL_PREFIX.match(path.regex)
    literals = leading.group(1).count("/") if leading else 0
    return PathMatcher("regex", path.regex, regex_match, (literals, literals, _KIND_RANK["regex"]), None)


def _index_key(pattern: tuple[str, ...]) -> str | None:
    return fold_case(pattern[1].partition(".")[0]) if len(pattern) > 1 else None


def _template_matcher(template: syntax.Template, case_sensitive: bool, extensions: bool,
                      segments_of: Callable[[Request], tuple[str, ...]]) -> Callable[[Request], Params | None]:
    segments, names, rest = template.segments, template.params, template.rest
    count = len(segments)
    slots = tuple(index for index, segment in enumerate(segments) if segment is None)
    literals = tuple((index, segment if case_sensitive else fold_case(segment))
                     for index, segment in enumerate(segments) if segment is not None)

    def match(request: Request) -> Params | None:
        parts = segments_of(request)
        total = len(parts)
        if total != count and (rest is None or total < count):
            return None
        for index, literal in literals:
            part = parts[index]
            if part != literal and not _literal_matches(literal, part, index == total - 1, extensions):
                return None
        values = request.path_segments  # parameters keep the case the client sent
        params = {}
        for name, index in zip(names, slots, strict=True):
            value = values[index]
            if not value:
                return None
            params[name] = value
        if rest is not None:
            params[rest] = "/".join(values[count:])
        return params or NO_PARAMS

    return match


def host_matches(patterns: tuple[str, ...], host: str) -> bool:
    """`*.example.com` matches any name ending in `.example.com` (as in Envoy's virtual hosts)."""
    for pattern in patterns:
        if pattern[0] == "*" and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
        if host == pattern:
            return True
    return False


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route_id: str
    #: Position in the policy (files in name order, routes in file order): breaks ties of specificity.
    position: int
    path: PathMatcher | None
    #: Canonical methods (HEAD is GET); None admits every method.
    methods: frozenset[str] | None
    hosts: tuple[str, ...] | None
    context_extensions: tuple[tuple[str, str], ...]
    #: See `route_specificity`; candidates are tried from the largest.
    specificity: Specificity
    #: Answers CORS preflights (OPTIONS with Origin and Access-Control-Request-Method) without credentials.
    cors_preflight: bool = False

    def match(self, request: Request) -> Params | None:
        """The resource part: host, Envoy route labels and path; the method is `admits`'s job."""
        if self.hosts is not None and not host_matches(self.hosts, request.hostname):
            return None
        if self.context_extensions:
            extensions = request.context_extensions
            for key, value in self.context_extensions:
                if extensions.get(key) != value:
                    return None
        return NO_PARAMS if self.path is None else self.path.match(request)

    def admits(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def mismatch(self, request: Request) -> str | None:
        """Why this route's resource does not match `request`, naming the first part that fails; None if it does."""
        if self.path is not None and self.path.match(request) is None:
            return f"path {request.path} does not match {self.path.kind} {self.path.text}"
        if self.hosts is not None and not host_matches(self.hosts, request.hostname):
            return f"host {request.hostname} is not one of {', '.join(self.hosts)}"
        for key, value in self.context_extensions:
            actual = request.context_extensions.get(key)
            if actual != value:
                got = "missing" if actual is None else repr(actual)
                return f"context_extensions.{key} is {got}, not {value!r}"
        return None


def route_specificity(path: PathMatcher | None, hosts: tuple[str, ...] | None, labels: int) -> Specificity:
    """Scope first, as Envoy routes: a pinned host (exact over wildcard) and Envoy route labels; then the path
    (literal segments, bound segments, exact > template/regex > prefix or `{rest...}`)."""
    host = 0 if hosts is None else 2 if all(host[0] != "*" for host in hosts) else 1
    return (host, labels, *(path.specificity if path is not None else (0, 0, 0)))


def compile_route(route_id: str, position: int, match: RouteMatch, cors_preflight: bool = False) -> CompiledRoute:
    path = compile_path(match.path) if match.path else None
    hosts = tuple(host.rstrip(".") for host in match.hosts) if match.hosts else None
    return CompiledRoute(
        route_id=route_id,
        position=position,
        path=path,
        methods=frozenset(canonical_method(method) for method in match.methods) if match.methods else None,
        hosts=hosts,
        context_extensions=tuple(sorted(match.context_extensions.items())),
        specificity=route_specificity(path, hosts, len(match.context_extensions)),
        cors_preflight=cors_preflight,
    )
