"""Typed configuration: `load_config(path)` returns a validated `Config` or raises `ConfigError`."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from extauth.config.schema import Config, SecretHolder
from extauth.documents.errors import ConfigError, ConfigIssue
from extauth.documents.yamlsource import (
    FieldPath,
    LineMap,
    dotted,
    line_for,
    parse_single_document,
    read_text,
    validate,
)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config with the line of every value, so checks made after loading still name file:line: field."""

    path: Path
    config: Config
    lines: LineMap

    def issue(self, at: FieldPath, message: str) -> ConfigIssue:
        return ConfigIssue(self.path, line_for(self.lines, at), dotted(at), message)

    def inline_secrets(self) -> list[ConfigIssue]:
        """Every secret written in the file itself (a ConfigMap or a repository shows it to all who read them),
        each with the fix; the message never holds the value."""
        found = []
        for at, holder in _models(self.config, ()):
            if not isinstance(holder, SecretHolder):
                continue
            for secret in holder.secret_fields:
                where = (*at, secret.name)
                if where in self.lines and secret.secret_when_inline(getattr(holder, secret.name)):
                    found.append(self.issue(where, (
                        f"a secret written inline; put it in a mounted file named by {dotted((*at, secret.file_field))}"
                        f" or in an environment variable named by {dotted((*at, secret.env_field))} "
                        "(docs/deployment.md#secrets)")))
        return found


def _models(model: BaseModel, at: FieldPath) -> Iterator[tuple[FieldPath, BaseModel]]:
    yield at, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(item, BaseModel):
                yield from _models(item, (*at, name) if index is None else (*at, name, index))


def read_config(path: Path) -> LoadedConfig:
    path = Path(path)
    data, lines = parse_single_document(path, read_text(path))
    return LoadedConfig(path, validate(Config, data, lines, path), lines)


def load_config(path: Path) -> Config:
    return read_config(path).config


__all__ = ["Config", "ConfigError", "ConfigIssue", "LoadedConfig", "load_config", "read_config"]
