"""Reading values out of verified claims: shared by authentication, forwarded headers and policy conditions."""

import json
from collections.abc import Mapping
from typing import Any

#: What a lookup returns for a claim that is not there (None is a legitimate JSON value).
MISSING: Any = object()
_ROLE_SEPARATORS = str.maketrans(",", " ")


def claim_at(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The claim at a dotted path (`realm_access.roles`), or MISSING."""
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping):
            return MISSING
        value = value.get(key, MISSING)
    return value


def find_claim(claims: Mapping[str, Any], name: str | None) -> Any:
    """A claim named in the configuration: the literal name first (`https://example.com/roles`, whose dots are not
    a path), else the dotted path (`realm_access.roles`); MISSING when neither exists or no claim is named."""
    if name is None:
        return MISSING
    value = claims.get(name, MISSING)
    if value is MISSING and "." in name:
        value = claim_at(claims, tuple(name.split(".")))
    return value


def claim_text(value: Any) -> str | None:
    """A claim value as header text, the one rendering of `forward.claim_headers` and a rule's `{claims.NAME}`:
    strings as they are, booleans `true`/`false`, a list of strings comma-joined when no item holds a comma (so
    `["a,b"]` and `["a", "b"]` stay apart), anything else compact JSON; None for a missing or null claim."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) and "," not in item for item in value):
        return ",".join(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def roles_in(value: Any) -> frozenset[str]:
    """The roles a claim value holds: a list of strings, or one space/comma separated string (`"reader writer"`)."""
    if isinstance(value, str):
        return frozenset(value.translate(_ROLE_SEPARATORS).split())
    return _strings(value)


def groups_in(value: Any) -> frozenset[str]:
    """The groups a claim value holds: a list of strings, or one string taken whole, since group names may contain
    spaces and commas (`"Domain Admins"`)."""
    return frozenset((value,)) if isinstance(value, str) else _strings(value)


def _strings(value: Any) -> frozenset[str]:
    """The string items of a list; anything else (numbers, objects, a missing claim) holds none."""
    return frozenset(item for item in value if isinstance(item, str)) if isinstance(value, list) else frozenset()
