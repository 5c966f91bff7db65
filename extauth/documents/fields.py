"""Field types shared by every file format: the server config, policy, screening and limit documents."""

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _header_name(value: str) -> str:
    lowered = value.lower()
    if not _HEADER_NAME.match(lowered):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return lowered


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be 1-63 letters, digits, '_', '.', '-', starting with a letter or digit")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
Name = Annotated[str, AfterValidator(_name)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
