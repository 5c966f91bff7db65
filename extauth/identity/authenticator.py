"""The authentication phase: headers in, a Principal (or None for no credentials, or AuthenticationError) out.

Per request: extract the token → cache → provider by unverified `iss` → verify → cache; a token that is not a
JWT goes to the introspection endpoint when one is configured (extauth.identity.introspection). Key loading and
refresh happen in the background, never on this path (except one rate-limited refetch for an unknown kid).
"""

import asyncio
import contextlib
from collections.abc import Mapping

from extauth.clock import Clock
from extauth.config.schema import AuthenticationConfig
from extauth.identity.apikeys import ApiKeys
from extauth.identity.cache import TokenCache, token_digest
from extauth.identity.http import HttpFetcher, UrllibFetcher
from extauth.identity.identities import Identities
from extauth.identity.introspection import Introspector, is_jws_shaped
from extauth.identity.jwks import KeyStore, key_store_for
from extauth.identity.jwt import JwtVerifier, UnverifiedToken
from extauth.identity.principal import AuthenticationError, Principal
from extauth.identity.token_source import TokenExtractor
from extauth.notify import Notify, ignore
from extauth.reasons import Reason


class Authenticator:
    def __init__(self, config: AuthenticationConfig, clock: Clock, fetcher: HttpFetcher | None = None,
                 notify: Notify = ignore) -> None:
        fetcher = fetcher or UrllibFetcher()
        self._extract = TokenExtractor(config.token_sources, config.max_token_bytes).extract
        self._cache = TokenCache(config.token_cache_size, clock)
        self._stores = [key_store_for(provider, clock, fetcher, notify) for provider in config.providers]
        self.api_keys = ApiKeys(config.api_keys, clock, notify) if config.api_keys is not None else None
        identities = Identities([*config.providers, *([config.introspection] if config.introspection else [])],
                                config.forward.max_header_value_bytes,
                                [config.api_keys.name] if config.api_keys is not None else [])
        self.introspector = (Introspector(config.introspection, clock, fetcher, identities, notify)
                             if config.introspection is not None else None)
        self._api_key_watch: asyncio.Task[None] | None = None
        self._api_key_reloads: set[asyncio.Task[bool]] = set()
        self._verifiers = {
            provider.issuer: JwtVerifier(provider, store, clock, identities)
            for provider, store in zip(config.providers, self._stores, strict=True)
        }

    @property
    def key_stores(self) -> list[KeyStore]:
        """Each provider's key store, for the metrics endpoint."""
        return list(self._stores)

    @property
    def ready(self) -> bool:
        """Every provider has keys (trivially true with none configured)."""
        return all(store.ready for store in self._stores)

    def load_key_files(self) -> None:
        """Load every key file and secret now (KeyLoadError on the first that cannot be used) and the API key
        store (ConfigError): before listening."""
        for store in self._stores:
            store.load_files()
        if self.api_keys is not None:
            self.api_keys.store.load()

    async def start(self) -> None:
        """Load key files not loaded yet (errors raise), make a first remote fetch, and start background refresh."""
        try:
            async with asyncio.TaskGroup() as group:
                for store in self._stores:
                    group.create_task(store.start())
        except ExceptionGroup as errors:
            await self.stop()
            raise errors.exceptions[0] from None
        if self.api_keys is not None and self.api_keys.config.watch:
            self._api_key_watch = asyncio.create_task(
                self.api_keys.store.watch(self.api_keys.config.watch_interval_seconds))

    def request_api_key_reload(self, trigger: str) -> None:
        """Reload the API key store soon (SIGHUP), from synchronous code; serialized with the watch's reloads."""
        if self.api_keys is None:
            return
        task = asyncio.get_running_loop().create_task(self.api_keys.store.reload(trigger))
        self._api_key_reloads.add(task)
        task.add_done_callback(self._api_key_reloads.discard)

    async def stop(self) -> None:
        if self._api_key_watch is not None:
            self._api_key_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._api_key_watch
            self._api_key_watch = None
        await asyncio.gather(*(store.stop() for store in self._stores))
        if self.introspector is not None:
            await self.introspector.stop()

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """An API key when the request carries one; otherwise a token. A request carrying both, or two keys, is
        refused: the upstream might believe the other one."""
        if self.api_keys is not None:
            keys = self.api_keys.presented(headers)
            if keys:
                if len(keys) > 1 or self._extract(headers) is not None:
                    raise AuthenticationError(Reason.MULTIPLE_CREDENTIALS, "send one credential: an API key or a token")
                return self.api_keys.authenticate(keys[0])
        token = self._extract(headers)
        if token is None:
            return None
        digest = token_digest(token)
        principal = self._cache.get(digest)
        if principal is not None:
            return principal
        if self.introspector is not None and not is_jws_shaped(token):
            return await self.introspector.authenticate(token)  # cached there, by its own TTLs
        unverified = UnverifiedToken.parse(token)
        verifier = self._verifiers.get(unverified.issuer) if unverified.issuer is not None else None
        if verifier is None:
            raise AuthenticationError(Reason.UNKNOWN_ISSUER, "token issuer is missing or not trusted")
        principal = await verifier.verify(unverified)
        self._cache.put(digest, principal)
        return principal
