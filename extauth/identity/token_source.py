"""Finding the raw token in a request: the configured sources are tried in order and the first present wins.

Header values are attacker-controlled, so parsing is plain string slicing that cannot raise.
"""

from collections.abc import Callable, Mapping, Sequence

from extauth.config.schema import TokenSourceConfig
from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason

Source = Callable[[Mapping[str, str]], str | None]


def header_source(name: str, scheme: str | None) -> Source:
    """`name: token`, or `name: <scheme> <token>` (RFC 7235: case-insensitive scheme, one or more spaces).

    A header carrying another scheme (say `Basic` where `Bearer` is expected) is someone else's credential,
    so for this source it counts as absent.
    """
    if scheme is None:
        return lambda headers: headers.get(name, "").strip() or None
    expected = scheme.lower()

    def find(headers: Mapping[str, str]) -> str | None:
        presented, _, token = headers.get(name, "").strip().partition(" ")
        if presented.lower() != expected:
            return None
        return token.lstrip(" ") or None

    return find


def cookie_source(name: str) -> Source:
    """The first cookie called `name` in the `cookie` header (RFC 6265 pairs; malformed pairs are skipped)."""

    def find(headers: Mapping[str, str]) -> str | None:
        cookies = headers.get("cookie", "")
        if name not in cookies:
            return None
        for pair in cookies.split(";"):
            key, has_value, value = pair.partition("=")
            if has_value and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
        return None

    return find


def _compile(config: TokenSourceConfig) -> Source:
    if config.header is not None:
        return header_source(config.header, config.scheme)
    assert config.cookie is not None, "the schema requires a header or a cookie"
    return cookie_source(config.cookie)


class TokenExtractor:
    def __init__(self, sources: Sequence[TokenSourceConfig], max_token_bytes: int) -> None:
        self._sources = [_compile(source) for source in sources]
        self._max_token_bytes = max_token_bytes

    def extract(self, headers: Mapping[str, str]) -> str | None:
        """The token from the first source that has one, or None when the request carries no credentials."""
        for source in self._sources:
            token = source(headers)
            if token is not None:
                if len(token.encode("utf-8", "surrogatepass")) > self._max_token_bytes:
                    raise AuthenticationError(
                        Reason.TOKEN_TOO_LARGE, f"token is larger than {self._max_token_bytes} bytes"
                    )
                return token
        return None
