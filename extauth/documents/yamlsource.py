"""YAML loading that remembers the line of every value, and pydantic validation that reports it.

PyYAML's composed node tree carries a start mark per node; we build plain Python data from it and keep a
map from field path (e.g. ``("authentication", "providers", 0, "issuer")``) to line, so a validation
error can be reported as ``file:line: field: message``.

Loading cannot hang or blow the stack, whatever the file holds: anchors and aliases are refused while the
events are read, before any node is built (an alias bomb expands exponentially, a recursive alias never
ends), nesting is bounded, and files are bounded in size. Every refusal is a ConfigError naming file and line.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from extauth.documents.errors import ConfigError, ConfigIssue, FieldValueError, sorted_issues

FieldPath = tuple[str | int, ...]
LineMap = dict[FieldPath, int]
Model = TypeVar("Model", bound=pydantic.BaseModel)

MAX_FILE_BYTES = 4 * 1024 * 1024
#: Mappings and sequences inside each other; a policy needs about ten, and the composer recurses per level.
MAX_NESTING_DEPTH = 64
#: Characters in a number: YAML 1.1 base-60 integers (`1:2:3`) take quadratic time to construct.
MAX_NUMBER_CHARS = 100
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _RefusedYAML(yaml.MarkedYAMLError):
    """Well-formed YAML that extauth does not accept (anchors, aliases, nesting beyond the bound)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases and bounds nesting, checked per event before composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _RefusedYAML(problem=f"YAML anchors and aliases are not allowed (alias *{event.anchor})",
                               problem_mark=event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _RefusedYAML(problem=f"YAML anchors and aliases are not allowed (anchor &{event.anchor})",
                               problem_mark=event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent) and self._depth >= MAX_NESTING_DEPTH:
            raise _RefusedYAML(problem=f"nested deeper than {MAX_NESTING_DEPTH} levels",
                               problem_mark=event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError.single(path, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise ConfigError.single(path, f"cannot read: {exc.strerror}") from None


def parse_documents(path: Path, text: str) -> list[tuple[Any, LineMap]]:
    """Every YAML document in ``text`` as (data, line map); syntax errors carry the offending line."""
    documents = []
    loader = None
    try:
        loader = _StrictLoader(text)
        while loader.check_node():
            node = loader.get_node()
            lines: LineMap = {}
            documents.append((_to_python(loader, node, (), lines, path), lines))
    except _RefusedYAML as exc:
        raise ConfigError.single(path, str(exc.problem), exc.problem_mark.line + 1) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError.single(path, f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError.single(path, f"invalid YAML: character #x{exc.character:04x} is not allowed", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(path, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return documents


def parse_single_document(path: Path, text: str) -> tuple[Any, LineMap]:
    documents = parse_documents(path, text)
    if len(documents) != 1:
        raise ConfigError.single(path, f"expected exactly one YAML document, found {len(documents)}")
    return documents[0]


def _to_python(loader: _StrictLoader, node: yaml.Node, at: FieldPath, lines: LineMap, path: Path) -> Any:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node, path)
            if not isinstance(key, str):
                raise ConfigError.single(
                    path, f"keys must be strings, got {key!r}", key_node.start_mark.line + 1, dotted(at)
                )
            if key in result:
                raise ConfigError.single(
                    path, "duplicate key", key_node.start_mark.line + 1, dotted((*at, key))
                )
            result[key] = _to_python(loader, value_node, (*at, key), lines, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, (*at, index), lines, path) for index, item in enumerate(node.value)]
    return _construct(loader, node, path)


def _construct(loader: _StrictLoader, node: yaml.Node, path: Path) -> Any:
    """A scalar's value; one the resolver recognises but Python refuses (month 13 in a timestamp, `!!float ''`)
    is a ConfigError at its line, not a stray ValueError or IndexError; so is a number too long to be a setting."""
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        raise ConfigError.single(path, f"invalid YAML value: a number of {len(node.value)} characters; "
                                 f"the limit is {MAX_NUMBER_CHARS}", node.start_mark.line + 1)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as exc:  # PyYAML's constructors also fail with IndexError (`!!float ''`) and the like
        tag = str(node.tag).rsplit(":", 1)[-1]
        reason = (str(exc).split(";")[0] if isinstance(exc, ValueError | OverflowError)
                  else f"cannot read {str(node.value)[:40]!r} as {tag}")
        raise ConfigError.single(path, f"invalid YAML value: {reason}", node.start_mark.line + 1) from None


def dotted(at: FieldPath) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def line_for(lines: LineMap, at: FieldPath) -> int | None:
    """The line of the deepest known ancestor of ``at`` (a missing field points at its parent mapping)."""
    for end in range(len(at), -1, -1):
        if at[:end] in lines:
            return lines[at[:end]]
    return None


#: Rounds of validating again without the unknown fields found so far (each round may reveal nested ones).
_MAX_REVALIDATIONS = 4


def validate(
    model: type[Model], data: Any, lines: LineMap, path: Path, context: Mapping[str, Any] | None = None
) -> Model:
    """Validate ``data`` against ``model``, reporting every error with file, line and field.

    pydantic skips a model's own checks (a route needs rules, exactly one key source) while one of its fields is
    invalid. An unknown field means nothing, so the data is validated again without the unknown fields: what
    those checks say is reported in the same run instead of after the typo is fixed.
    """
    if data is None:
        data = {}
    context = dict(context or {}, file=path)
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
    issues = [_issue(error, lines, path) for error in errors]
    for _ in range(_MAX_REVALIDATIONS):
        unknown = [_field_path(error["loc"]) for error in errors if error["type"] == "extra_forbidden"]
        if not unknown:
            break
        data = _without(data, unknown)
        try:
            model.model_validate(data, context=context)
            break
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False)
            issues += [_issue(error, lines, path) for error in errors]
    raise ConfigError(sorted_issues(issues))


def _issue(error: Any, lines: LineMap, path: Path) -> ConfigIssue:
    at = _field_path(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "value_error":
        message = str(error["ctx"]["error"])
        if isinstance(error["ctx"]["error"], FieldValueError):
            at = (*at, error["ctx"]["error"].field)
    return ConfigIssue(path, line_for(lines, at), dotted(at), message)


def _without(data: Any, paths: list[FieldPath]) -> Any:
    """A copy of ``data`` without the mapping keys at ``paths`` (paths that do not lead to a key are ignored)."""
    if not paths:
        return data
    if isinstance(data, dict):
        drop = {path[0] for path in paths if len(path) == 1}
        return {key: _without(value, [path[1:] for path in paths if len(path) > 1 and path[0] == key])
                for key, value in data.items() if key not in drop}
    if isinstance(data, list):
        return [_without(item, [path[1:] for path in paths if len(path) > 1 and path[0] == index])
                for index, item in enumerate(data)]
    return data


def _field_path(loc: tuple[Any, ...]) -> FieldPath:
    # pydantic inserts union-member and function-validator tags into loc; drop anything that is not a key.
    return tuple(p for p in loc if isinstance(p, int) or (isinstance(p, str) and not _is_tag(p)))


def _is_tag(part: str) -> bool:
    return part.startswith("function-") or "[" in part
