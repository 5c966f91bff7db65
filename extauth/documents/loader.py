"""Load policy files (one file, or the top-level `*.yaml`/`*.yml` of a directory) into a versioned PolicySet.

Documents are dispatched on `kind` (`Policy`, `Screening`). Errors name file, line and field; semantic checks
(unknown roles, inheritance cycles, duplicate names, path parameters a rule names but its route lacks) are
reported the same way, all of them at once. A directory's subdirectories (e.g. `tests/`) are not policy.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from extauth.documents import syntax
from extauth.documents.errors import ConfigError, ConfigIssue, sorted_issues
from extauth.documents.policy import EgressDestination, PolicyDocument, RateLimit, Route, RouteMatch, Rule
from extauth.documents.roles import granting_roles
from extauth.documents.screening import ScreeningDocument
from extauth.documents.yamlsource import LineMap, line_for, parse_documents, read_text, validate

Document = TypeVar("Document", PolicyDocument, ScreeningDocument)
KINDS: dict[str, type[BaseModel]] = {"Policy": PolicyDocument, "Screening": ScreeningDocument}


@dataclass(frozen=True, slots=True)
class LoadedDocument(Generic[Document]):
    file: Path
    document: Document
    lines: LineMap

    def issue(self, at: tuple[str | int, ...], field: str, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, line_for(self.lines, at), field, message)


@dataclass(frozen=True, slots=True)
class PolicySet:
    documents: tuple[LoadedDocument[PolicyDocument], ...]
    #: Content hash of every file, recorded with each decision so an audit names the exact policy.
    version: str
    screening: tuple[LoadedDocument[ScreeningDocument], ...] = ()

    def routes(self) -> Iterator[tuple[str, Route]]:
        """Every route with its id `policy/route` (the prefix of its rules' and limits' ids), files in name
        order and routes in file order: the one place route ids are made."""
        for loaded in self.documents:
            for route in loaded.document.routes:
                yield f"{loaded.document.metadata.name}/{route.name}", route

    def egress(self) -> Iterator[tuple[str, EgressDestination]]:
        """Every egress destination with its id `policy/egress/name` (its limits' prefix), in file order."""
        for loaded in self.documents:
            for destination in loaded.document.egress:
                yield f"{loaded.document.metadata.name}/egress/{destination.name}", destination

    def granting_roles(self) -> dict[str, frozenset[str]]:
        """role → the roles that grant it, across every document (compile once per load and share)."""
        return granting_roles({role: parents for loaded in self.documents
                               for role, parents in loaded.document.roles.items()})


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def rule_files(path: Path) -> list[Path]:
    """The WAF's project rule files (`*.conf` beside the policy files, docs/waf.md): part of the policy version
    and of what the watch compares, so editing one is a reload like editing a policy."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".conf" and p.is_file())
    return []


def load_policies(path: Path) -> PolicySet:
    policy_set, issues = read_policies(path)
    if issues:
        raise ConfigError(issues)
    return policy_set


def read_policies(path: Path) -> tuple[PolicySet, list[ConfigIssue]]:
    """The documents that validate, and every issue found in all of them, sorted by file and line.

    A file that does not parse is skipped whole; otherwise each document is validated on its own (an unknown
    `kind` or a schema error in one does not hide the next), and the cross-document checks always run: over
    every valid document, and over the roles and the routes valid on their own of a document with schema errors.
    """
    try:
        files = policy_files(path)
    except OSError as exc:
        raise ConfigError.single(path, f"cannot list: {exc.strerror}") from None
    if not files:
        raise ConfigError.single(path, "no policy files (*.yaml) found")
    digest = hashlib.sha256()
    loaded: dict[str, list[LoadedDocument[Any]]] = {kind: [] for kind in KINDS}
    checked: list[_PolicyParts] = []
    issues: list[ConfigIssue] = []
    for file in rule_files(path):
        try:
            digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        except OSError as exc:
            issues.append(ConfigIssue(file, None, "", f"cannot read: {exc.strerror}"))
    for file in files:
        try:
            text = read_text(file)
            documents = parse_documents(file, text)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        digest.update(file.name.encode() + b"\0" + text.encode() + b"\0")
        for data, lines in documents:
            if data is None:
                continue
            kind = data.get("kind", "Policy") if isinstance(data, dict) else "Policy"
            if kind not in KINDS:
                issues.append(ConfigIssue(file, line_for(lines, ("kind",)), "kind",
                                          f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}"))
                continue
            try:
                document = LoadedDocument(file, validate(KINDS[kind], data, lines, file), lines)
            except ConfigError as exc:
                issues.extend(exc.issues)
                if kind == "Policy":
                    checked.append(_PolicyParts.salvaged(file, data, lines))
                continue
            loaded[kind].append(document)
            if kind == "Policy":
                checked.append(_PolicyParts.of(document))
    issues.extend(_semantic_issues(checked))
    policy_set = PolicySet(tuple(loaded["Policy"]), digest.hexdigest()[:16], tuple(loaded["Screening"]))
    return policy_set, sorted_issues(issues)


@dataclass(frozen=True, slots=True)
class _RouteParts:
    """What the cross-document checks read from one route, each part with its index in the file."""

    index: int
    name: str | None
    #: The path's parameters; None when the route's `match` is invalid (parameter checks are then skipped).
    params: tuple[str, ...] | None
    rules: list[tuple[int, Rule]]
    limits: list[tuple[int, RateLimit]]

    @classmethod
    def of(cls, index: int, route: Route) -> "_RouteParts":
        params = route.match.path.parameters() if route.match.path else ()
        return cls(index, route.name, params, list(enumerate(route.rules)), list(enumerate(route.limits)))

    @classmethod
    def salvaged(cls, index: int, raw: Any) -> "_RouteParts | None":
        """A route with schema errors: its match, rules and limits that are valid on their own."""
        if not isinstance(raw, dict):
            return None
        try:
            match = RouteMatch.model_validate(raw.get("match", {}))
            params: tuple[str, ...] | None = match.path.parameters() if match.path else ()
        except ValidationError:
            params = None
        name = raw.get("name")
        return cls(index, name if isinstance(name, str) else None, params,
                   _valid_items(Rule, raw.get("rules")), _valid_items(RateLimit, raw.get("limits")))


Item = TypeVar("Item", Rule, RateLimit)


def _valid_items(model: type[Item], raw: Any) -> list[tuple[int, Item]]:
    valid = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            valid.append((index, model.model_validate(item)))
        except ValidationError:
            continue
    return valid


@dataclass(frozen=True, slots=True)
class _PolicyParts:
    """What the cross-document checks read from one Policy document: its role graph and its routes."""

    file: Path
    lines: LineMap
    roles: dict[str, list[str]]
    routes: list[_RouteParts]

    @classmethod
    def of(cls, loaded: LoadedDocument[PolicyDocument]) -> "_PolicyParts":
        document = loaded.document
        routes = [_RouteParts.of(index, route) for index, route in enumerate(document.routes)]
        return cls(loaded.file, loaded.lines, dict(document.roles), routes)

    @classmethod
    def salvaged(cls, file: Path, data: Any, lines: LineMap) -> "_PolicyParts":
        """A document with schema errors: its role names and parents as written, and of each route the parts that
        are valid on their own, so one typo does not hide an undefined role, a cycle or a limit naming a missing
        parameter elsewhere in the file (the schema errors themselves are reported apart)."""
        raw = data if isinstance(data, dict) else {}
        roles = raw.get("roles") if isinstance(raw.get("roles"), dict) else {}
        graph = {name: [parent for parent in parents if isinstance(parent, str)] if isinstance(parents, list) else []
                 for name, parents in roles.items()}
        raw_routes = raw.get("routes") if isinstance(raw.get("routes"), list) else []
        routes = [parts for index, item in enumerate(raw_routes)
                  if (parts := _RouteParts.salvaged(index, item)) is not None]
        return cls(file, lines, graph, routes)

    def issue(self, at: tuple[str | int, ...], field: str, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, line_for(self.lines, at), field, message)


def _semantic_issues(documents: list[_PolicyParts]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    roles: dict[str, list[str]] = {}
    role_origin: dict[str, _PolicyParts] = {}
    seen_routes: dict[str, Path] = {}
    for loaded in documents:
        for role, parents in loaded.roles.items():
            if role in roles:
                issues.append(loaded.issue(("roles", role), f"roles.{role}", "role defined twice"))
            roles[role] = parents
            role_origin[role] = loaded
        for route in loaded.routes:
            if route.name is None:
                continue
            if route.name in seen_routes:
                issues.append(loaded.issue(("routes", route.index, "name"), f"routes[{route.index}].name",
                                           f"route {route.name!r} already defined in {seen_routes[route.name]}"))
            seen_routes[route.name] = loaded.file
    for role, parents in roles.items():
        for parent in parents:
            if parent not in roles:
                issues.append(role_origin[role].issue(("roles", role), f"roles.{role}",
                                                      f"inherits undefined role {parent!r}"))
    issues.extend(_cycle_issues(roles, role_origin))
    for loaded in documents:
        for route in loaded.routes:
            r_index, params = route.index, route.params
            for u_index, rule in route.rules:
                at = ("routes", r_index, "rules", u_index)
                field = f"routes[{r_index}].rules[{u_index}]"
                for role in rule.when.roles or ():
                    if role not in roles:
                        issues.append(loaded.issue((*at, "when", "roles"), f"{field}.when.roles",
                                                   f"undefined role {role!r} (declare it under roles:)"))
                named = [(("when", "params_match_claims", name), name) for name in rule.when.params_match_claims or ()]
                named += [(("headers", header), name) for header, value in rule.headers.items()
                          for name in syntax.header_params(syntax.parse_header_template(value))]
                for where, name in named:
                    if params is not None and name not in params:
                        issues.append(loaded.issue((*at, *where), ".".join((field, *where)),
                                                   f"the route's path has no parameter {name!r}"
                                                   f" ({'it has: ' + ', '.join(params) if params else 'it has none'})"))
                issues.extend(_limit_issues(loaded, at, field, list(enumerate(rule.limits)), params, roles))
            issues.extend(_limit_issues(loaded, ("routes", r_index), f"routes[{r_index}]", route.limits, params, roles))
    return issues


def _limit_issues(loaded: _PolicyParts, at: tuple[str | int, ...], field: str, limits: list[tuple[int, RateLimit]],
                  params: tuple[str, ...] | None, roles: dict[str, list[str]]) -> list[ConfigIssue]:
    """Limit names are unique where they are declared; keys name real path parameters; overrides name real roles."""
    issues = []
    names: set[str] = set()
    for index, limit in limits:
        where, here = (*at, "limits", index), f"{field}.limits[{index}]"
        if limit.name in names:
            issues.append(loaded.issue((*where, "name"), f"{here}.name", f"limit {limit.name!r} defined twice"))
        names.add(limit.name)
        for k_index, part in enumerate(limit.key):
            kind, _, name = part.partition(":")
            if kind == "param" and params is not None and name not in params:
                issues.append(loaded.issue((*where, "key", k_index), f"{here}.key[{k_index}]",
                                           f"the route's path has no parameter {name!r}"))
        for o_index, override in enumerate(limit.overrides):
            for role in override.when.roles or ():
                if role not in roles:
                    issues.append(loaded.issue((*where, "overrides", o_index, "when", "roles"),
                                               f"{here}.overrides[{o_index}].when.roles",
                                               f"undefined role {role!r} (declare it under roles:)"))
    return issues


def _cycle_issues(roles: dict[str, list[str]],
                  origin: dict[str, _PolicyParts]) -> list[ConfigIssue]:
    issues = []
    for start in roles:
        stack, visited = list(roles[start]), set()
        while stack:
            role = stack.pop()
            if role == start:
                issues.append(origin[start].issue(("roles", start), f"roles.{start}", "inheritance cycle"))
                break
            if role not in visited and role in roles:
                visited.add(role)
                stack.extend(roles[role])
    return issues
