"""The identity extauth vouches for: a token's `sub`, qualified by its provider unless that provider is primary.

Two issuers may both have a user called `root`; the upstream, the limit keys and `subjects:` conditions must
never take one for the other. So the identity is `<provider name>:<sub>` (`partner:root`), except for the one
provider declared `primary: true`, whose users keep their plain `sub` (`root`).

Why this cannot be forged: provider names are `[A-Za-z0-9_.-]`, so in a qualified identity the first `:` ends
the provider name, and two qualified identities are equal only if provider and `sub` are. The one remaining
overlap is a primary subject that itself reads `partner:root`; a primary subject whose text before its first
`:` names another provider (compared case-insensitively, in case the upstream folds case) is refused with 401
`invalid_subject`. Any subject that is not header-safe (see extauth.documents.headers) is refused the same way.
"""

from collections.abc import Sequence
from typing import Protocol

from extauth.documents.headers import header_value_problem
from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason

SEPARATOR = ":"


class Issuing(Protocol):
    """What qualifies an identity: a JWT provider or the introspection endpoint."""

    @property
    def name(self) -> str: ...

    @property
    def primary(self) -> bool: ...


class Identities:
    def __init__(self, providers: Sequence[Issuing], max_bytes: int,
                 other_qualifiers: Sequence[str] = ()) -> None:
        """`other_qualifiers`: names other credentials qualify their identities with (`api_keys.name`)."""
        self._qualified_names = frozenset(
            [provider.name.lower() for provider in providers if not provider.primary]
            + [name.lower() for name in other_qualifiers])
        self._max_bytes = max_bytes

    def of(self, provider: Issuing, subject: str) -> str:
        """The identity for `subject` as issued by `provider`; AuthenticationError if it could be confused."""
        problem = header_value_problem(subject, self._max_bytes)
        if problem is None and provider.primary:
            prefix, separator, _ = subject.partition(SEPARATOR)
            if separator and prefix.lower() in self._qualified_names:
                problem = "reads as another provider's identity"
        identity = subject if provider.primary else f"{provider.name}{SEPARATOR}{subject}"
        if problem is None and len(identity.encode()) > self._max_bytes:
            problem = f"makes an identity longer than {self._max_bytes} bytes"
        if problem is not None:
            raise AuthenticationError(Reason.INVALID_SUBJECT, f"token subject {problem}")
        return identity
