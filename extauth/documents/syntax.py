"""The small languages inside policy values: path templates, host patterns, times of day, header templates.

Each parser raises ValueError with a message for the policy author; the schema (policy.py) calls them so a
mistake is reported as `file:line: field: message`, and the compilers call them again to build evaluators.
"""

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}")
_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CLAIM_PATH = re.compile(r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SPIFFE_MAX_LENGTH = 2048
SPIFFE_SCHEME = "spiffe://"


@dataclass(frozen=True, slots=True)
class Template:
    """`/tenants/{tenant}/orders/{id}`: `segments` are literals, or None where a parameter sits."""

    segments: tuple[str | None, ...]
    #: Parameter name per `None` segment, in order.
    params: tuple[str, ...]
    #: The name of a trailing `{name...}`, which takes the rest of the path (possibly empty), else None.
    rest: str | None


def parse_template(text: str) -> Template:
    if not text.startswith("/"):
        raise ValueError("paths start with '/'")
    parts = text.split("/")
    segments: list[str | None] = []
    names: list[str] = []
    rest = None
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if not part and position > 0 and not last:
            raise ValueError("empty path segment ('//')")
        if "{" not in part and "}" not in part:
            segments.append(part)
            continue
        found = _PARAM.fullmatch(part)
        if found is None:
            raise ValueError(f"segment {part!r} must be literal text or one {{name}} (letters, digits, '_')")
        name, is_rest = found.group(1), found.group(2)
        if name in names or name == rest:
            raise ValueError(f"duplicate parameter {name!r}")
        if is_rest:
            if not last:
                raise ValueError(f"{{{name}...}} may only be the last segment")
            rest = name
        else:
            segments.append(None)
            names.append(name)
    return Template(tuple(segments), tuple(names), rest)


def host_pattern(text: str) -> str:
    """`api.example.com` or `*.example.com` (any name ending in `.example.com`); lower-cased, no port."""
    lowered = text.lower()
    if not _HOST.match(lowered):
        raise ValueError(f"{text!r} is not a host name or '*.' followed by one")
    return lowered


def spiffe_id(text: str) -> tuple[str, tuple[str, ...]] | None:
    """(trust domain, path segments) of a SPIFFE ID in its one canonical spelling (SPIFFE ID standard, section 2):
    a lower-case trust domain of `[a-z0-9._-]`, segments of `[A-Za-z0-9._-]`, no empty, `.` or `..` segment, no
    port, user info, query, fragment or percent-encoding; None for anything else."""
    if not text.startswith(SPIFFE_SCHEME) or len(text) > _SPIFFE_MAX_LENGTH:
        return None
    trust_domain, slash, path = text[len(SPIFFE_SCHEME):].partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return None
    segments = tuple(path.split("/")) if slash else ()
    if any(segment in (".", "..") or not _SPIFFE_SEGMENT.fullmatch(segment) for segment in segments):
        return None
    return trust_domain, segments


def seconds_of_day(value: object) -> int:
    """`"HH:MM"` (00:00 to 24:00) → seconds since midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write times in quotes (\"{value // 60:02d}:{value % 60:02d}\"): "
                         f"unquoted, YAML reads them as the number {value}")
    found = _TIME.match(value) if isinstance(value, str) else None
    if found is None or (found.group(1) == "24" and found.group(2) != "00"):
        raise ValueError(f"{value!r} is not a time of day (HH:MM, 00:00 to 24:00)")
    return int(found.group(1)) * 3600 + int(found.group(2)) * 60


def claim_path(text: str) -> tuple[str, ...]:
    """`tenant` or a dotted path into nested claims (`realm_access.roles`)."""
    if not _CLAIM_PATH.match(text):
        raise ValueError(f"{text!r} is not a claim name or dotted path")
    return tuple(text.split("."))


#: A header template, parsed: literal text, or ("param", name), or ("claim", dotted path).
HeaderPart = str | tuple[str, str | tuple[str, ...]]


def parse_header_template(text: str) -> tuple[HeaderPart, ...]:
    """`tenant-{tenant}` / `{claims.email}`: literal text with `{param}` and `{claims.NAME}` placeholders."""
    parts: list[HeaderPart] = []
    position = 0
    for found in _PLACEHOLDER.finditer(text):
        parts.append(text[position:found.start()])
        inner = found.group(1)
        if inner.startswith("claims."):
            parts.append(("claim", claim_path(inner.removeprefix("claims."))))
        elif _IDENTIFIER.match(inner):
            parts.append(("param", inner))
        else:
            raise ValueError(f"placeholder {{{inner}}} is neither {{param}} nor {{claims.NAME}}")
        position = found.end()
    tail = text[position:]
    if "{" in tail or "}" in tail or any("{" in part or "}" in part for part in parts if isinstance(part, str)):
        raise ValueError("unbalanced '{' or '}' (placeholders are {param} or {claims.NAME})")
    parts.append(tail)
    return tuple(part for part in parts if part != "")


def header_params(parts: tuple[HeaderPart, ...]) -> list[str]:
    return [part[1] for part in parts if isinstance(part, tuple) and part[0] == "param"]  # type: ignore[misc]
