"""Which strings extauth may vouch for in a header: only those that reach the upstream exactly as they are.

Sanitising (dropping control characters, trimming, truncating) would make distinct values look alike
(`root\\n` and `root`; two long subjects sharing a prefix), so a value that would need it is refused instead.
"""

_CONTROL_CHARACTERS = frozenset(chr(code) for code in (*range(0x00, 0x20), 0x7F))


def header_value_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be sent unchanged as a header value of at most `max_bytes`, or None if it can."""
    if not _CONTROL_CHARACTERS.isdisjoint(value):
        return "contains control characters"
    if value != value.strip():
        return "has leading or trailing whitespace"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if size > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None
