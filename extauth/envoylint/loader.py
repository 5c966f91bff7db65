"""Read an Envoy bootstrap into envoy-data-plane's typed models, keeping what the models lose: the line of each
field and the `# envoy-lint: allow RULE -- reason` waiver comments.

The whole bootstrap is parsed typed: every `@type` the file names is imported from envoy_data_plane first (the
import registers it in betterproto2's message pool, which is what lets `Any.from_dict` parse `typed_config`), so a
misspelt field or a wrong value type is an input error, not a silently skipped check. The rules then read the
models, so `normalizePath` and `normalize_path`, `0.5s` and `{seconds: 0, nanos: 500000000}` are the same thing.
"""

import contextlib
import importlib
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: A field path as the YAML spells it: mapping keys (snake_case) and list indexes.
FieldPath = tuple[str | int, ...]

_TYPE_URL_PREFIX = "type.googleapis.com/"
_WAIVER = re.compile(r"#\s*envoy-lint:\s*(?P<body>.*)$")
_WAIVER_BODY = re.compile(r"allow\s+(?P<rules>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\s*--\s*(?P<reason>\S.*)")


class BootstrapError(ValueError):
    """The file is not a readable Envoy bootstrap (the CLI reports it in one line and exits 2)."""


@dataclass(frozen=True)
class Waiver:
    line: int
    rules: frozenset[str]
    reason: str


@dataclass(frozen=True)
class MalformedWaiver:
    line: int
    text: str


@dataclass
class LoadedBootstrap:
    path: Path
    #: envoy_data_plane.envoy.config.bootstrap.v3.Bootstrap
    bootstrap: Any
    _root: yaml.Node
    _lines: list[str]
    waivers: dict[int, Waiver] = field(default_factory=dict)
    malformed_waivers: list[MalformedWaiver] = field(default_factory=list)

    def nodes_along(self, path: FieldPath) -> list[tuple[FieldPath, yaml.Node]]:
        """The YAML nodes from the root down `path`, as far as the file spells it (a field left at its default
        has no node: the deepest present ancestor stands for it)."""
        found: list[tuple[FieldPath, yaml.Node]] = [((), self._root)]
        node = self._root
        for depth, part in enumerate(path):
            node = _child(node, part)
            if node is None:
                break
            found.append((path[:depth + 1], node))
        return found

    def line_of(self, path: FieldPath) -> int:
        return self.nodes_along(path)[-1][1].start_mark.line + 1

    def waiver_for(self, path: FieldPath, rule: str) -> Waiver | None:
        """A waiver of `rule` on the offending field's line, or on the first line of a list entry containing it
        (the listener, the filter, the route...), or in the comment lines right above either."""
        candidates = [self.line_of(path)]
        candidates += [node.start_mark.line + 1 for at, node in self.nodes_along(path)
                       if at and isinstance(at[-1], int)]
        for line in candidates:
            for waiver_line in self._comment_block(line):
                waiver = self.waivers.get(waiver_line)
                if waiver is not None and rule in waiver.rules:
                    return waiver
        return None

    def _comment_block(self, line: int) -> Iterator[int]:
        yield line
        above = line - 1
        while above >= 1 and self._lines[above - 1].lstrip().startswith("#"):
            yield above
            above -= 1


def load_bootstrap(path: Path) -> LoadedBootstrap:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BootstrapError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise BootstrapError(f"{where}: not valid YAML: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(data, dict) or root is None:
        raise BootstrapError(f"{path}:1: an Envoy bootstrap is a mapping (admin, static_resources, ...)")
    for type_url, at in _type_urls(data, ()):
        _register(type_url, path, at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
    try:
        bootstrap = Bootstrap.from_dict(data)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise BootstrapError(f"{path}: not an Envoy v3 bootstrap: {message}") from None
    lines = text.splitlines()
    loaded = LoadedBootstrap(path, bootstrap, root, lines)
    for number, line in enumerate(lines, start=1):
        _read_waiver(loaded, number, line)
    return loaded


def dotted(path: FieldPath) -> str:
    """`static_resources.listeners[0].filter_chains[0]`, a map key that is no identifier quoted in brackets
    (`typed_per_filter_config["envoy.filters.http.ext_authz"]`): the jq-like spelling every finding uses."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.isidentifier():
            text += f"[{json.dumps(part)}]"
        else:
            text += f".{part}" if text else part
    return text


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(part, int):
        return node.value[part] if isinstance(node, yaml.SequenceNode) and part < len(node.value) else None
    if not isinstance(node, yaml.MappingNode):
        return None
    spellings = {part, _camel(part)}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value in spellings:
            return value
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _type_urls(value: Any, at: FieldPath) -> Iterator[tuple[str, FieldPath]]:
    if isinstance(value, dict):
        type_url = value.get("@type")
        if isinstance(type_url, str):
            yield type_url, at
        for key, item in value.items():
            yield from _type_urls(item, (*at, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _type_urls(item, (*at, index))


def _register(type_url: str, path: Path, at: FieldPath) -> None:
    """Import the envoy_data_plane module defining `type_url` (the import registers its messages)."""
    from envoy_data_plane.message_pool import default_message_pool
    parts = type_url.removeprefix(_TYPE_URL_PREFIX).split(".")
    for end in range(len(parts) - 1, 0, -1):  # a nested message's package is a shorter prefix
        if type_url in default_message_pool.url_to_type:
            return
        if all(part.isidentifier() for part in parts[:end]):
            # the generated models trip pydantic deprecation warnings on import
            with contextlib.suppress(ModuleNotFoundError), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                importlib.import_module("envoy_data_plane." + ".".join(parts[:end]))
    if type_url in default_message_pool.url_to_type:
        return
    raise BootstrapError(f"{path}: {dotted(at)}: unknown @type {type_url!r} (not in envoy-data-plane's Envoy API)")


def _read_waiver(loaded: LoadedBootstrap, number: int, line: str) -> None:
    comment = _WAIVER.search(line)
    if comment is None:
        return
    body = _WAIVER_BODY.fullmatch(comment["body"].strip())
    if body is None:
        loaded.malformed_waivers.append(MalformedWaiver(number, comment.group(0)))
        return
    rules = frozenset(rule.strip() for rule in body["rules"].split(","))
    loaded.waivers[number] = Waiver(number, rules, body["reason"].strip())
