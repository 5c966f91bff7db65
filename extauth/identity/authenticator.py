"""The authentication phase: headers in, a Principal (or None for no credentials, or AuthenticationError) out.

Per request: extract the token → cache → provider by unverified `iss` → verify → cache. Key loading and
refresh happen in the background, never on this path (except one rate-limited refetch for an unknown kid).
"""

import asyncio
from collections.abc import Mapping

from extauth.clock import Clock
from extauth.config.schema import AuthenticationConfig
from extauth.identity.cache import TokenCache, token_digest
from extauth.identity.http import HttpFetcher, UrllibFetcher
from extauth.identity.identities import Identities
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
        identities = Identities(config.providers, config.forward.max_header_value_bytes)
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
        """Load every key file and secret now (KeyLoadError on the first that cannot be used): before listening."""
        for store in self._stores:
            store.load_files()

    async def start(self) -> None:
        """Load key files not loaded yet (errors raise), make a first remote fetch, and start background refresh."""
        try:
            async with asyncio.TaskGroup() as group:
                for store in self._stores:
                    group.create_task(store.start())
        except ExceptionGroup as errors:
            await self.stop()
            raise errors.exceptions[0] from None

    async def stop(self) -> None:
        await asyncio.gather(*(store.stop() for store in self._stores))

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        token = self._extract(headers)
        if token is None:
            return None
        digest = token_digest(token)
        principal = self._cache.get(digest)
        if principal is not None:
            return principal
        unverified = UnverifiedToken.parse(token)
        verifier = self._verifiers.get(unverified.issuer) if unverified.issuer is not None else None
        if verifier is None:
            raise AuthenticationError(Reason.UNKNOWN_ISSUER, "token issuer is missing or not trusted")
        principal = await verifier.verify(unverified)
        self._cache.put(digest, principal)
        return principal
