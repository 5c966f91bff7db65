"""docs/configuration.md documents every field of the config schema, so a new field cannot ship undocumented."""

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from extauth.config.schema import Config

DOC = Path(__file__).parents[3] / "docs" / "configuration.md"
HEADING = re.compile(r"^#{2,3} `([a-z_.\[\]]+)`$")
ROW_NAMES = re.compile(r"`([a-z_.]+)`")


def nested_models(annotation: object) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models inside a field's type, each with whether it sits in a list (written `name[]` in the doc)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
        return
    in_list = typing.get_origin(annotation) is list
    for argument in typing.get_args(annotation):
        for model, nested_in_list in nested_models(argument):
            yield model, in_list or nested_in_list


def schema_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every field of `model` and of the models in it, as a dotted path (`authentication.providers[].jwks.url`)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for nested, in_list in nested_models(field.annotation):
            yield from schema_fields(nested, f"{path}[]." if in_list else f"{path}.")


def documented() -> tuple[set[str], dict[str, str]]:
    """The dotted paths the doc's section headings and table rows name, and each row's text by its path."""
    paths: set[str] = set()
    rows: dict[str, str] = {}
    section = ""
    for line in DOC.read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            section = heading.group(1)
            paths.add(section)
        elif line.startswith("| `") and section:
            first_cell = line.split("|")[1]
            for name in ROW_NAMES.findall(first_cell):
                paths.add(f"{section}.{name}")
                rows[f"{section}.{name}"] = line
    return paths, rows


def test_every_config_field_is_documented() -> None:
    """Each schema field has a row in its section's table (a nested model: rows for its fields; the small
    mappings of `token_sources`: spelled out in its row); the message lists every one missing."""
    paths, rows = documented()

    def in_parent_row(path: str) -> bool:
        parent, _, name = path.removesuffix("[]").rpartition(".")
        row = rows.get(parent.removesuffix("[]"), "")
        return f"{name}:" in row or f"`{name}`" in row

    def has_documented_fields(path: str) -> bool:
        return any(other.startswith((f"{path}.", f"{path}[].")) for other in paths)

    missing = [path for path in schema_fields(Config)
               if path not in paths and not has_documented_fields(path) and not in_parent_row(path)]
    assert not missing, f"fields of extauth/config/schema.py without a row in docs/configuration.md: {missing}"


def test_the_walk_finds_nested_fields() -> None:
    """The schema walk reaches fields inside lists and optional models (it must not pass by finding nothing)."""
    fields = set(schema_fields(Config))
    assert {"authentication.providers[].jwks.url", "server.tls.allowed_clients", "rate_limit.breaker.cooldown_seconds",
            "authentication.token_sources[].cookie", "policy.shadow_path"} <= fields
