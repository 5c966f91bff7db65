"""Load policy files (one file or a directory of `*.yaml`) into a versioned PolicySet.

Errors name file, line and field; semantic checks (unknown roles, inheritance cycles, duplicate names)
are reported the same way, all of them at once.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from extauth.config.errors import ConfigError, ConfigIssue
from extauth.config.yamlsource import LineMap, line_for, parse_documents, read_text, validate
from extauth.policy.model import PolicyDocument


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    file: Path
    document: PolicyDocument
    lines: LineMap

    def issue(self, at: tuple[str | int, ...], field: str, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, line_for(self.lines, at), field, message)


@dataclass(frozen=True, slots=True)
class PolicySet:
    documents: tuple[LoadedDocument, ...]
    #: Content hash of every file, recorded with each decision so an audit names the exact policy.
    version: str


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_policies(path: Path) -> PolicySet:
    files = policy_files(path)
    if not files:
        raise ConfigError.single(path, "no policy files (*.yaml) found")
    digest = hashlib.sha256()
    documents: list[LoadedDocument] = []
    issues: list[ConfigIssue] = []
    for file in files:
        text = read_text(file)
        digest.update(file.name.encode() + b"\0" + text.encode() + b"\0")
        try:
            for data, lines in parse_documents(file, text):
                if data is None:
                    continue
                documents.append(LoadedDocument(file, validate(PolicyDocument, data, lines, file), lines))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if not issues:
        issues.extend(_semantic_issues(documents))
    if issues:
        raise ConfigError(issues)
    return PolicySet(tuple(documents), digest.hexdigest()[:16])


def _semantic_issues(documents: list[LoadedDocument]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    roles: dict[str, list[str]] = {}
    role_origin: dict[str, LoadedDocument] = {}
    seen_routes: dict[str, Path] = {}
    for loaded in documents:
        for role, parents in loaded.document.roles.items():
            if role in roles:
                issues.append(loaded.issue(("roles", role), f"roles.{role}", "role defined twice"))
            roles[role] = parents
            role_origin[role] = loaded
        for index, route in enumerate(loaded.document.routes):
            if route.name in seen_routes:
                issues.append(loaded.issue(("routes", index, "name"), f"routes[{index}].name",
                                           f"route {route.name!r} already defined in {seen_routes[route.name]}"))
            seen_routes[route.name] = loaded.file
    for role, parents in roles.items():
        for parent in parents:
            if parent not in roles:
                issues.append(role_origin[role].issue(("roles", role), f"roles.{role}",
                                                      f"inherits undefined role {parent!r}"))
    issues.extend(_cycle_issues(roles, role_origin))
    for loaded in documents:
        for r_index, route in enumerate(loaded.document.routes):
            for u_index, rule in enumerate(route.rules):
                for role in rule.when.roles or ():
                    if role not in roles:
                        at = ("routes", r_index, "rules", u_index, "when", "roles")
                        issues.append(loaded.issue(at, f"routes[{r_index}].rules[{u_index}].when.roles",
                                                   f"undefined role {role!r} (declare it under roles:)"))
    return issues


def _cycle_issues(roles: dict[str, list[str]], origin: dict[str, LoadedDocument]) -> list[ConfigIssue]:
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
