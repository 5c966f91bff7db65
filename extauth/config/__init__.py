"""Typed configuration: `load_config(path)` returns a validated `Config` or raises `ConfigError`."""

from dataclasses import dataclass
from pathlib import Path

from extauth.config.schema import Config
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


def read_config(path: Path) -> LoadedConfig:
    path = Path(path)
    data, lines = parse_single_document(path, read_text(path))
    return LoadedConfig(path, validate(Config, data, lines, path), lines)


def load_config(path: Path) -> Config:
    return read_config(path).config


__all__ = ["Config", "ConfigError", "ConfigIssue", "LoadedConfig", "load_config", "read_config"]
