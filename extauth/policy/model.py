"""The policy file schema (`apiVersion: extauth/v1`, `kind: Policy`), documented in docs/policy.md."""

from typing import Literal

from pydantic import Field, model_validator

from extauth.config.schema import Name, Strict

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]


class PathMatch(Strict):
    exact: str | None = None
    prefix: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "PathMatch":
        chosen = [kind for kind in ("exact", "prefix") if getattr(self, kind) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of exact, prefix (got {chosen or 'none'})")
        value = self.exact if self.exact is not None else self.prefix
        if not value.startswith("/"):
            raise ValueError("paths start with '/'")
        return self


class RouteMatch(Strict):
    """All given parts must match; an omitted part matches anything."""

    path: PathMatch | None = None
    methods: list[HttpMethod] | None = Field(None, min_length=1)
    #: Envoy per-route `context_extensions` (e.g. `service: orders`), set in the Envoy route config.
    context_extensions: dict[str, str] = Field(default_factory=dict)


class Condition(Strict):
    """Every listed part must hold; within a list, any element suffices."""

    roles: list[str] | None = Field(None, min_length=1)
    subjects: list[str] | None = Field(None, min_length=1)


class Rule(Strict):
    name: Name
    effect: Literal["allow", "deny"] = "allow"
    when: Condition = Field(default_factory=Condition)


class Route(Strict):
    name: Name
    match: RouteMatch = Field(default_factory=RouteMatch)
    #: Anonymous access: no credentials needed (a presented token must still be valid).
    public: bool = False
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _public_or_rules(self) -> "Route":
        if self.public and self.rules:
            raise ValueError("a public route has no rules")
        if not self.public and not self.rules:
            raise ValueError("a route needs rules, or `public: true`; unmatched requests are denied anyway")
        return self


class Metadata(Strict):
    name: Name


class PolicyDocument(Strict):
    apiVersion: Literal["extauth/v1"]  # noqa: N815 - the file's own key
    kind: Literal["Policy"]
    metadata: Metadata
    #: role -> roles it inherits (`admin: [writer]`, `writer: [reader]`).
    roles: dict[Name, list[Name]] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
