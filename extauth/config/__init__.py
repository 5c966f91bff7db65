"""Typed configuration: `load_config(path)` returns a validated `Config` or raises `ConfigError`."""

from pathlib import Path

from extauth.config.errors import ConfigError, ConfigIssue
from extauth.config.schema import Config
from extauth.config.yamlsource import parse_single_document, read_text, validate


def load_config(path: Path) -> Config:
    path = Path(path)
    data, lines = parse_single_document(path, read_text(path))
    return validate(Config, data, lines, path)


__all__ = ["Config", "ConfigError", "ConfigIssue", "load_config"]
