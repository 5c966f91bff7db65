"""Role inheritance, resolved once per load: which held roles satisfy a required one."""

from collections.abc import Iterable, Mapping


def granting_roles(inherits: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """role -> itself plus every role that inherits it, directly or transitively (cycles are rejected at load)."""
    granting: dict[str, set[str]] = {role: {role} for role in inherits}
    for role in inherits:
        stack, seen = list(inherits[role]), set()
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                granting[parent].add(role)
                stack.extend(inherits.get(parent, ()))
    return {role: frozenset(holders) for role, holders in granting.items()}
