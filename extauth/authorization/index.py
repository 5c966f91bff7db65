"""The route index: a request's candidate routes, most specific first, from one dictionary look-up.

Routes are keyed by their first literal path segment, case-folded and without any extension or trailing
spaces (`/api/...`, `/favicon.ico` under `favicon`), so every spelling the matchers accept finds the same bucket.
Routes pinning no first segment (regex, a template starting with a parameter, the `/` prefix, no path: host or
context_extensions only) are candidates for every request. Each bucket is merged and sorted at load, so the cost
of a look-up does not grow with the number of routes.

`resolve` implements the rule in docs/policy.md: the most specific route whose *resource* (host, Envoy route labels,
path) matches decides, together with the routes of exactly the same specificity; if none of those admits the
method, the answer is 405, never a broader route further down.
"""

from collections.abc import Sequence
from typing import NamedTuple

from extauth.authorization.matching import CompiledRoute
from extauth.conditions.params import NO_PARAMS, Params
from extauth.request import Request


class Resolution(NamedTuple):
    #: The route that decides, or None (no resource matched, or a method mismatch: see `method_mismatch`).
    route: CompiledRoute | None
    params: Params
    #: When the most specific matching resource does not admit the method: its routes (for 405 and `Allow`).
    method_mismatch: tuple[CompiledRoute, ...] = ()


_NOTHING = Resolution(None, NO_PARAMS)


class RouteIndex:
    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        by_segment: dict[str, list[CompiledRoute]] = {}
        everywhere: list[CompiledRoute] = []
        for route in routes:
            key = route.path.first_segment if route.path is not None else None
            (everywhere if key is None else by_segment.setdefault(key, [])).append(route)

        def ordered(*groups: list[CompiledRoute]) -> tuple[CompiledRoute, ...]:
            return tuple(sorted((route for group in groups for route in group),
                                key=lambda route: (tuple(-rank for rank in route.specificity), route.position)))

        self._everywhere = ordered(everywhere)
        self._by_segment = {segment: ordered(group, everywhere) for segment, group in by_segment.items()}

    def candidates(self, request: Request) -> tuple[CompiledRoute, ...]:
        if not self._by_segment:
            return self._everywhere
        segments = request.folded_segments
        first = segments[1].partition(".")[0].rstrip(" ") if len(segments) > 1 else ""
        return self._by_segment.get(first, self._everywhere)

    def resolve(self, request: Request) -> Resolution:
        method = request.method
        level = None
        mismatched: list[CompiledRoute] = []
        for route in self.candidates(request):
            if level is not None and route.specificity != level:
                break
            params = route.match(request)
            if params is None:
                continue
            methods = route.methods
            if methods is None or method in methods:
                return Resolution(route, params)
            level = route.specificity
            mismatched.append(route)
        return Resolution(None, NO_PARAMS, tuple(mismatched)) if mismatched else _NOTHING
