"""Route matching, compiled once: which route a request is for, and the path parameters it binds.

`CompiledRoute.match(request)` is the hot path: it returns the bound parameters (a shared empty mapping when
there are none) or None. `CompiledRoute.mismatch(request)` says in words why a route does not match, for
`extauth explain`; it is never called while serving.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from extauth.policy import syntax
from extauth.policy.model import PathMatch, RouteMatch
from extauth.request import Request

Params = Mapping[str, str]
NO_PARAMS: Params = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: str
    text: str
    #: request → bound parameters, or None when the path does not match.
    match: Callable[[Request], Params | None]


def compile_path(path: PathMatch) -> PathMatcher:
    if path.exact is not None:
        exact = path.exact
        return PathMatcher("exact", exact, lambda request: NO_PARAMS if request.path == exact else None)
    if path.prefix is not None:
        prefix = path.prefix
        return PathMatcher("prefix", prefix,
                           lambda request: NO_PARAMS if request.path.startswith(prefix) else None)
    if path.template is not None:
        return PathMatcher("template", path.template, _template_matcher(syntax.parse_template(path.template)))
    assert path.regex is not None
    pattern = re.compile(path.regex)

    def regex(request: Request) -> Params | None:
        found = pattern.fullmatch(request.path)
        if found is None:
            return None
        return {name: value or "" for name, value in found.groupdict().items()} if pattern.groupindex else NO_PARAMS

    return PathMatcher("regex", path.regex, regex)


def _template_matcher(template: syntax.Template) -> Callable[[Request], Params | None]:
    segments, names, rest = template.segments, template.params, template.rest
    count = len(segments)
    slots = tuple(index for index, segment in enumerate(segments) if segment is None)
    literals = tuple((index, segment) for index, segment in enumerate(segments) if segment is not None)

    def match(request: Request) -> Params | None:
        parts = request.path_segments
        if len(parts) != count and (rest is None or len(parts) < count):
            return None
        for index, literal in literals:
            if parts[index] != literal:
                return None
        params = {}
        for name, index in zip(names, slots, strict=True):
            value = parts[index]
            if not value:
                return None
            params[name] = value
        if rest is not None:
            params[rest] = "/".join(parts[count:])
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
    #: Position in the policy (files in name order, routes in file order): first match wins.
    position: int
    path: PathMatcher | None
    methods: frozenset[str] | None
    hosts: tuple[str, ...] | None
    context_extensions: tuple[tuple[str, str], ...]

    def match(self, request: Request) -> Params | None:
        if self.methods is not None and request.method not in self.methods:
            return None
        if self.hosts is not None and not host_matches(self.hosts, request.hostname):
            return None
        if self.context_extensions:
            extensions = request.context_extensions
            for key, value in self.context_extensions:
                if extensions.get(key) != value:
                    return None
        return NO_PARAMS if self.path is None else self.path.match(request)

    def mismatch(self, request: Request) -> str | None:
        """Why this route does not match `request`, naming the first part that fails; None if it matches."""
        if self.path is not None and self.path.match(request) is None:
            return f"path {request.path} does not match {self.path.kind} {self.path.text}"
        if self.methods is not None and request.method not in self.methods:
            return f"method {request.method} is not one of {', '.join(sorted(self.methods))}"
        if self.hosts is not None and not host_matches(self.hosts, request.hostname):
            return f"host {request.hostname} is not one of {', '.join(self.hosts)}"
        for key, value in self.context_extensions:
            actual = request.context_extensions.get(key)
            if actual != value:
                got = "missing" if actual is None else repr(actual)
                return f"context_extensions.{key} is {got}, not {value!r}"
        return None


def compile_route(route_id: str, position: int, match: RouteMatch) -> CompiledRoute:
    return CompiledRoute(
        route_id=route_id,
        position=position,
        path=compile_path(match.path) if match.path else None,
        methods=frozenset(match.methods) if match.methods else None,
        hosts=tuple(match.hosts) if match.hosts else None,
        context_extensions=tuple(sorted(match.context_extensions.items())),
    )
