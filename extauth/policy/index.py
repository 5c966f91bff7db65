"""The route index: a request's candidate routes, in policy order, from at most two dictionary look-ups.

Routes are keyed by what their path pins down: an exact path, or the first path segment (a prefix such as
`/api/` or `/api/v1`, a template starting `/api/...`). Routes pinning neither (regex, a prefix within the first
segment such as `/ap`, a template starting with a parameter, no path: host or context_extensions only) are
candidates for every request. Each key's candidate tuple is merged and ordered at load, so the cost of a
lookup does not grow with the number of routes; only the candidates are matched in full.
"""

from collections.abc import Sequence

from extauth.policy import syntax
from extauth.policy.matching import CompiledRoute, Params
from extauth.request import Request


class RouteIndex:
    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        by_path: dict[str, list[CompiledRoute]] = {}
        by_segment: dict[str, list[CompiledRoute]] = {}
        everywhere: list[CompiledRoute] = []
        for route in routes:
            kind, key = _key(route)
            table = by_path if kind == "path" else by_segment if kind == "segment" else None
            (everywhere if table is None else table.setdefault(key, [])).append(route)

        def ordered(*groups: list[CompiledRoute]) -> tuple[CompiledRoute, ...]:
            return tuple(sorted({route.position: route for group in groups for route in group}.values(),
                                key=lambda route: route.position))

        self._everywhere = ordered(everywhere)
        self._by_segment = {segment: ordered(group, everywhere) for segment, group in by_segment.items()}
        self._by_path = {path: ordered(group, by_segment.get(_first_segment(path.split("/")), []), everywhere)
                         for path, group in by_path.items()}

    def candidates(self, request: Request) -> tuple[CompiledRoute, ...]:
        found = self._by_path.get(request.path)
        if found is not None:
            return found
        if self._by_segment:
            return self._by_segment.get(_first_segment(request.path_segments), self._everywhere)
        return self._everywhere

    def first_match(self, request: Request) -> tuple[CompiledRoute, Params] | None:
        """The first route (in policy order) matching `request`, with the path parameters it binds."""
        for route in self.candidates(request):
            params = route.match(request)
            if params is not None:
                return route, params
        return None


def _first_segment(segments: Sequence[str]) -> str | None:
    return segments[1] if len(segments) > 1 and segments[0] == "" else None


def _key(route: CompiledRoute) -> tuple[str, str | None]:
    path = route.path
    if path is None:
        return "everywhere", None
    if path.kind == "exact":
        return "path", path.text
    if path.kind == "prefix" and "/" in path.text[1:]:
        return "segment", path.text[1:path.text.index("/", 1)]
    if path.kind == "template":
        template = syntax.parse_template(path.text)
        if len(template.segments) > 1 and template.segments[1] is not None:
            return "segment", template.segments[1]
    return "everywhere", None
