"""Who is calling, once authentication has succeeded."""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from extauth.reasons import Reason


@dataclass(frozen=True, slots=True)
class Principal:
    #: The token's `sub` as issued.
    subject: str
    #: Who extauth vouches for: `subject` qualified by provider unless the provider is primary
    #: (extauth.identity.identities). Sent upstream, used in limit keys and matched by `subjects:`.
    identity: str
    issuer: str
    provider: str
    key_id: str | None
    #: From the provider's `roles_claim`/`groups_claim` only; empty when the provider trusts no such claim.
    roles: frozenset[str]
    #: Verified claims, for policy conditions and forwarded claim headers; never logged whole.
    claims: Mapping[str, Any]
    expires_at: float | None
    groups: frozenset[str] = frozenset()
    #: `namespace/name` from a `preset: kubernetes` provider's token (extauth.identity.kubernetes), else None.
    service_account: str | None = None


#: Who conditions see when nobody authenticated (public routes, limit overrides): no roles, groups or claims.
ANONYMOUS = Principal(subject="", identity="", issuer="", provider="", key_id=None, roles=frozenset(),
                      claims=MappingProxyType({}), expires_at=None)


class AuthenticationError(Exception):
    """Credentials were presented (or required) and are not acceptable; the Check answers 401.

    `description` goes to the client in `WWW-Authenticate` and the JSON body, so it never contains
    the token or anything taken from it.
    """

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


class KeysUnavailableError(AuthenticationError):
    """The issuer is known but its keys have never loaded (IdP down since start): the Check answers 503."""

    def __init__(self, provider: str) -> None:
        super().__init__(Reason.KEYS_UNAVAILABLE, f"signing keys for provider {provider!r} are not available")
