"""Verified tokens, remembered so a client reusing its token costs a dict lookup instead of a signature check."""

import hashlib
from collections import OrderedDict

from extauth.clock import Clock
from extauth.identity.principal import Principal

#: Bounds how long a verified token outlives the removal of its key from the JWKS (revocation by rotation).
DEFAULT_MAX_TTL_SECONDS = 300.0


def token_digest(token: str) -> bytes:
    """The cache key: a hash, so a memory dump of the cache yields no usable bearer tokens."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TokenCache:
    """LRU of principals by token digest; each entry lives until `min(exp, inserted + max_ttl)`.

    A capacity of 0 disables caching.
    """

    def __init__(self, capacity: int, clock: Clock, max_ttl: float = DEFAULT_MAX_TTL_SECONDS) -> None:
        self._capacity = capacity
        self._clock = clock
        self._max_ttl = max_ttl
        self._entries: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        valid_until, principal = entry
        if self._clock.now() >= valid_until:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return principal

    def put(self, digest: bytes, principal: Principal) -> None:
        if not self._capacity:
            return
        now = self._clock.now()
        valid_until = now + self._max_ttl
        if principal.expires_at is not None:
            valid_until = min(valid_until, principal.expires_at)
        if valid_until <= now:
            return
        self._entries[digest] = (valid_until, principal)
        self._entries.move_to_end(digest)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
