"""Key stores per provider: keys (keys.py) loaded once from a file, a URL or OIDC discovery, refreshed in the
background, looked up per request by dict reads."""

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

import structlog
from jwt import PyJWTError
from jwt.algorithms import HMACAlgorithm

from extauth.clock import Clock
from extauth.config.files import read_key_file
from extauth.config.schema import JwtProviderConfig
from extauth.documents.urls import key_url_problem
from extauth.identity.http import FetchError, HttpFetcher
from extauth.identity.keys import HMAC_MIN_SECRET_BYTES, KeyLoadError, KeySet, VerificationKey, json_object, parse_jwks
from extauth.notify import Notify, ignore

log = structlog.get_logger("extauth.jwks")

def retry_delay(failures: int, refresh_seconds: float) -> float:
    """Backoff after `failures` consecutive failed refreshes: 1 s, 2 s, 4 s ... but never past the refresh period."""
    return float(min(refresh_seconds, 2 ** min(failures - 1, 32)))


class KeyStore(Protocol):
    #: None until keys have loaded once; afterwards always the last good set.
    keys: KeySet | None

    @property
    def ready(self) -> bool: ...

    def load_files(self) -> None:
        """Load key material kept in files now (KeyLoadError if it cannot be used); remote sources wait for start."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def refetch_for_unknown_kid(self) -> KeySet | None:
        """The keys after an attempt to learn a kid the current set lacks (rate-limited by the store)."""


class SharedSecretStore:
    """The HMAC secret of a provider configured with `shared_secret_file`, read once at start.

    A trailing newline (left by `echo` or an editor) is not taken as part of the secret.
    """

    def __init__(self, provider: JwtProviderConfig) -> None:
        assert provider.shared_secret_file is not None
        self._name = provider.name
        self._path = provider.shared_secret_file
        self._algorithms = frozenset(provider.algorithms)
        self.keys: KeySet | None = None

    @property
    def ready(self) -> bool:
        return self.keys is not None

    def load_files(self) -> None:
        """Read the secret now (raises KeyLoadError): `serve` does this before it binds a socket."""
        try:
            self.keys = load_shared_secret(self._path, self._algorithms)
        except KeyLoadError as error:
            raise KeyLoadError(f"provider {self._name!r}: {error}") from None

    async def start(self) -> None:
        if self.keys is None:
            self.load_files()

    async def stop(self) -> None:
        pass

    async def refetch_for_unknown_kid(self) -> KeySet | None:
        return self.keys


class JwksStore:
    """A provider's JWKS from a file (read once), a URL, or the URL its OIDC discovery document names.

    Remote sets refresh every `refresh_seconds`; when the IdP is down the last good keys keep serving and
    retries back off. A token naming an unknown kid may trigger one early refetch per cooldown period.
    """

    def __init__(
        self,
        provider: JwtProviderConfig,
        clock: Clock,
        fetcher: HttpFetcher,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float], float] = lambda delay: delay * random.uniform(0.9, 1.1),
        notify: Notify = ignore,
    ) -> None:
        assert provider.jwks is not None
        self._notify = notify
        #: Whether the last fetch failed: the audit stream gets the transitions, not every retry.
        self._failing = False
        self._name = provider.name
        self._issuer = provider.issuer
        self._algorithms = frozenset(provider.algorithms)
        self._config = provider.jwks
        self._clock = clock
        self._fetcher = fetcher
        self._sleep = sleep
        #: Spreads the refreshes of many workers and replicas so they do not hit the IdP in lockstep.
        self._jitter = jitter
        self.keys: KeySet | None = None
        self._loaded_at: float | None = None
        #: For the metrics endpoint (extauth_jwks_*): loads that succeeded, fetches that failed.
        self.refreshes = 0
        self.refresh_failures = 0
        self._last_refetch_at = -math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.keys is not None

    @property
    def name(self) -> str:
        return self._name

    @property
    def loaded_at(self) -> float | None:
        """Clock.monotonic() of the last successful load, or None before the first."""
        return self._loaded_at

    def load_files(self) -> None:
        """Read a JWKS file now (raises KeyLoadError): `serve` does this before it binds a socket. Remote
        sources load in `start`, since an IdP that is down must not keep extauth from listening."""
        if self._config.file is None:
            return
        try:
            keys, skipped = load_jwks_file(self._config.file, self._algorithms)
        except KeyLoadError as error:
            raise KeyLoadError(f"provider {self._name!r}: {error}") from None
        self._install(keys, skipped, source=str(self._config.file))

    async def start(self) -> None:
        """Load once (a file must load; a remote source may fail and is retried in the background)."""
        if self._config.file is not None:
            if self.keys is None:
                self.load_files()
            return
        loaded = await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(0 if loaded else 1))

    async def stop(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None

    async def refresh(self) -> bool:
        """Fetch the keys now, or join the fetch already running; True if the keys are fresh."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._refresh_once())
        return await asyncio.shield(self._inflight)

    async def refetch_for_unknown_kid(self) -> KeySet | None:
        """Join a running fetch, or start one unless the last unknown-kid refetch is under a cooldown old."""
        if self._inflight is None:
            now = self._clock.monotonic()
            if self._config.file is not None or now - self._last_refetch_at < self._config.refetch_cooldown_seconds:
                return self.keys
            self._last_refetch_at = now
        await self.refresh()
        return self.keys

    async def _refresh_forever(self, failures: int) -> None:
        period = self._config.refresh_seconds
        while True:
            await self._sleep(self._jitter(retry_delay(failures, period) if failures else period))
            failures = 0 if await self.refresh() else failures + 1

    async def _refresh_once(self) -> bool:
        try:
            keys, skipped, url = await self._fetch()
        except Exception as error:  # no failure may end the refresh loop or drop the good keys
            self.refresh_failures += 1
            description = _describe(error, self._config.fetch_timeout_seconds)
            log.warning(
                "jwks_refresh_failed",
                provider=self._name,
                error=description,
                seconds_since_last_good=(
                    None if self._loaded_at is None else round(self._clock.monotonic() - self._loaded_at, 1)
                ),
            )
            if not self._failing:
                self._failing = True
                self._notify("jwks_unavailable", provider=self._name, error=description,
                             serving_last_good_keys=self.keys is not None)
            return False
        else:
            self._install(keys, skipped, source=url)
            if self._failing:
                self._failing = False
                self._notify("jwks_recovered", provider=self._name, keys=len(keys))
            return True
        finally:
            self._inflight = None

    async def fetch_once(self) -> tuple[KeySet, str]:
        """Fetch (discovery included) without installing anything, for `extauth validate --online`: the keys and
        where they came from, or KeyLoadError saying why not, as a refresh would log it."""
        try:
            keys, _, url = await self._fetch()
        except Exception as error:
            raise KeyLoadError(_describe(error, self._config.fetch_timeout_seconds)) from None
        problem = algorithms_problem(keys, self._algorithms)
        if problem is not None:
            raise KeyLoadError(f"{url}: {problem}")
        return keys, url

    async def _fetch(self) -> tuple[KeySet, int, str]:
        async with asyncio.timeout(self._config.fetch_timeout_seconds):
            url = self._config.url or await self._discover_jwks_uri()
            keys, skipped = parse_jwks(await self._get(url))
        return keys, skipped, url

    async def _discover_jwks_uri(self) -> str:
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = json_object(await self._get(url), "OIDC discovery document")
        if document.get("issuer") != self._issuer:
            raise KeyLoadError(
                f"discovery document {url} names issuer {document.get('issuer')!r}, expected {self._issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeyLoadError(f"discovery document {url} has no jwks_uri")
        problem = key_url_problem(jwks_uri)
        if problem is not None:
            raise KeyLoadError(f"discovery document {url}: jwks_uri {jwks_uri!r} {problem}")
        return jwks_uri

    async def _get(self, url: str) -> bytes:
        return await self._fetcher.get(url, timeout=self._config.fetch_timeout_seconds, ca_file=self._config.ca_file)

    def _install(self, keys: KeySet, skipped: int, *, source: str) -> None:
        self.keys = keys
        self._loaded_at = self._clock.monotonic()
        self.refreshes += 1
        log.info("jwks_loaded", provider=self._name, keys=len(keys), skipped=skipped, source=source)


def key_store_for(provider: JwtProviderConfig, clock: Clock, fetcher: HttpFetcher,
                  notify: Notify = ignore) -> KeyStore:
    if provider.shared_secret_file is not None:
        return SharedSecretStore(provider)
    return JwksStore(provider, clock, fetcher, notify=notify)


def load_jwks_file(path: Path, algorithms: Iterable[str]) -> tuple[KeySet, int]:
    """The keys of a JWKS file and how many were skipped; KeyLoadError unless one can verify one of `algorithms`."""
    document = _read(path)
    try:
        keys, skipped = parse_jwks(document)
    except KeyLoadError as error:
        raise KeyLoadError(f"{path}: {error}") from None
    problem = algorithms_problem(keys, algorithms)
    if problem is not None:
        raise KeyLoadError(f"{path}: {problem}")
    return keys, skipped


def algorithms_problem(keys: KeySet, algorithms: Iterable[str]) -> str | None:
    """Why `keys` cannot verify any token signed with one of `algorithms`, or None when one can."""
    wanted = set(algorithms)
    usable = set().union(*(key.algorithms for key in keys.keys))
    if usable & wanted:
        return None
    return (f"no key can verify {', '.join(sorted(wanted))} (the provider's algorithms); "
            f"its keys verify {', '.join(sorted(usable))}")


def load_shared_secret(path: Path, algorithms: Iterable[str]) -> KeySet:
    """The HMAC secret in `path`; KeyLoadError if it is shorter than the longest hash of `algorithms` (or a PEM
    key, which PyJWT refuses as an HMAC secret). A trailing newline is not part of it."""
    algorithms = frozenset(algorithms)
    secret = _read(path).rstrip(b"\r\n")
    shortest = max(HMAC_MIN_SECRET_BYTES[alg] for alg in algorithms)
    if len(secret) < shortest:
        raise KeyLoadError(f"shared secret in {path} is {len(secret)} bytes; "
                           f"{', '.join(sorted(algorithms))} need at least {shortest}")
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except PyJWTError as error:
        raise KeyLoadError(f"{path}: {error}") from None
    return KeySet([VerificationKey(None, secret, algorithms)])


def _read(path: Path) -> bytes:
    try:
        return read_key_file(path)
    except ValueError as error:
        raise KeyLoadError(str(error)) from None


def _describe(error: Exception, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, FetchError | KeyLoadError):
        return str(error)
    return f"{type(error).__name__}: {error}"
