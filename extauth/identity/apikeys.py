"""API keys as credentials (docs/apikeys.md): the store of key digests in force, and a key in, a Principal out.

Per request: the format and checksum are checked first (a typo or truncation costs no lookup), then the key's
SHA-256 is looked up and compared in constant time. The lookup is by digest, so how long it takes depends only
on the digest of what the caller sent, which tells the caller nothing about how close the key is to a real one.

The store is read before extauth listens (an unreadable store stops `serve`), then reloaded whenever the file
changes: a store that does not load keeps the last good one serving, logged and audited with every file:line
error, as a broken policy reload is. A revoked key stops working at the first reload that reads its revocation.
"""

import asyncio
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import structlog

from extauth.clock import Clock
from extauth.config.schema import ApiKeysConfig
from extauth.documents.apikeys import ApiKeyEntry, read_key_store
from extauth.documents.errors import ConfigError
from extauth.identity.apikey_format import key_digest, key_problem
from extauth.identity.claims import groups_in, roles_in
from extauth.identity.identities import SEPARATOR
from extauth.identity.principal import AuthenticationError, Principal
from extauth.identity.token_source import Source, header_source
from extauth.notify import Notify, ignore
from extauth.reasons import Reason

log = structlog.get_logger("extauth.apikeys")

#: The `Authorization` scheme API keys may use (`Authorization: ApiKey eak_…`), with `api_keys.authorization_scheme`.
AUTHORIZATION_SCHEME = "ApiKey"
#: (mtime_ns, size, inode) of the store file; a missing file is (-1, -1, -1).
Fingerprint = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class StoredKey:
    digest: bytes
    revoked: bool
    #: Wall-clock expiry (seconds since the epoch), or None.
    expires_at: float | None
    principal: Principal


class ApiKeyStore:
    """The keys in force, swapped whole on reload, so a Check sees one store or the other, never a mix."""

    def __init__(self, config: ApiKeysConfig, notify: Notify = ignore) -> None:
        self.path = config.store
        self._name = config.name
        self._notify = notify
        self._keys: dict[bytes, StoredKey] = {}
        self._fingerprint: Fingerprint | None = None
        #: Reloads one at a time: a slower read of an older file must never be swapped in after a newer one.
        self._serial = asyncio.Lock()
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, digest: bytes) -> StoredKey | None:
        return self._keys.get(digest)

    def load(self) -> None:
        """Read the store now; ConfigError if it cannot be used (before listening, this stops `serve`)."""
        self._fingerprint = fingerprint(self.path)
        self._keys = self._index(self.path)
        log.info("apikeys_loaded", store=str(self.path), keys=len(self._keys))

    def changed(self) -> bool:
        return fingerprint(self.path) != self._fingerprint

    async def reload(self, trigger: str) -> bool:
        """Read the store off the loop and swap it in; on any failure keep the current keys. True on success."""
        async with self._serial:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> bool:
        # Taken first: a write made while reading reloads again.
        self._fingerprint = await asyncio.to_thread(fingerprint, self.path)
        try:
            keys = await asyncio.to_thread(self._index, self.path)
        except ConfigError as error:
            self._reject(trigger, [str(issue) for issue in error.issues])
            return False
        except Exception as error:  # nothing a file holds may end the watch or drop the good keys
            log.error("apikeys_reload_crashed", trigger=trigger, exc_info=True)
            self._reject(trigger, [f"{self.path}: unexpected {type(error).__name__} while loading: {error}"[:500]])
            return False
        self._keys = keys
        self.reloads += 1
        self.last_error = None
        log.info("apikeys_reloaded", trigger=trigger, store=str(self.path), keys=len(keys))
        self._notify("apikeys_reloaded", trigger=trigger, store=str(self.path), keys=len(keys))
        return True

    async def watch(self, interval_seconds: float) -> None:
        """Poll the file's stat (follows Kubernetes Secret symlink swaps: a swap changes the inode)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                async with self._serial:
                    if await asyncio.to_thread(self.changed):
                        await self._reload("file_change")
            except Exception:
                log.exception("apikeys_watch_error")

    def _index(self, path: Path) -> dict[bytes, StoredKey]:
        """Runs in a worker thread on reload: touches nothing a Check reads."""
        return {bytes.fromhex(entry.sha256): self._stored(entry) for entry in read_key_store(path).keys}

    def _stored(self, entry: ApiKeyEntry) -> StoredKey:
        expires_at = entry.expires.timestamp() if entry.expires is not None else None
        claims = {**entry.claims, "sub": entry.client, "iss": self._name, "client_id": entry.client}
        principal = Principal(
            subject=entry.client, identity=f"{self._name}{SEPARATOR}{entry.client}", issuer=self._name,
            provider=self._name, key_id=entry.id, roles=roles_in(entry.claims.get("roles")),
            groups=groups_in(entry.claims.get("groups")), claims=MappingProxyType(claims), expires_at=expires_at)
        return StoredKey(bytes.fromhex(entry.sha256), entry.revoked is not None, expires_at, principal)

    def _reject(self, trigger: str, errors: list[str]) -> None:
        self.failures += 1
        self.last_error = "\n".join(errors)
        log.error("apikeys_reload_failed", trigger=trigger, store=str(self.path), serving_keys=len(self._keys),
                  errors=errors)
        self._notify("apikeys_reload_failed", trigger=trigger, store=str(self.path), serving_keys=len(self._keys),
                     errors=errors)


def fingerprint(path: Path) -> Fingerprint:
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1, -1)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ApiKeys:
    """Where a request carries its API key, and what that key is worth."""

    def __init__(self, config: ApiKeysConfig, clock: Clock, notify: Notify = ignore) -> None:
        self.config = config
        self.store = ApiKeyStore(config, notify)
        self._clock = clock
        self._sources: list[Source] = [header_source(config.header, None)]
        if config.authorization_scheme:
            self._sources.append(header_source("authorization", AUTHORIZATION_SCHEME))

    def presented(self, headers: Mapping[str, str]) -> list[str]:
        """Every API key the request carries (normally none or one)."""
        return [key for key in (source(headers) for source in self._sources) if key is not None]

    def authenticate(self, key: str) -> Principal:
        problem = key_problem(key)
        if problem is not None:
            raise AuthenticationError(Reason.MALFORMED_API_KEY, problem)
        digest = key_digest(key)
        stored = self.store.find(digest)
        if stored is None or not hmac.compare_digest(stored.digest, digest):
            raise AuthenticationError(Reason.UNKNOWN_API_KEY, "the API key is not known")
        if stored.revoked:
            raise AuthenticationError(Reason.REVOKED_API_KEY, "the API key has been revoked")
        if stored.expires_at is not None and self._clock.now() >= stored.expires_at:
            raise AuthenticationError(Reason.EXPIRED_API_KEY, "the API key has expired")
        return stored.principal
