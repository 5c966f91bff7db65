"""OAuth2 token introspection (RFC 7662): an opaque token in, a Principal out, at most one endpoint call per token
per cache period.

Only tokens that are not JWTs are introspected (`is_jws_shaped`): a JWT of an issuer extauth does not trust is
refused as such, never posted to the introspection endpoint, so no bearer token of another issuer reaches it.
Answers are cached by token digest (extauth.identity.cache.token_digest), never by the token: active ones until
`min(exp, now + cache_seconds)`, refused ones for `negative_cache_seconds`, each in its own bounded LRU so a flood
of made-up tokens cannot evict the good answers. Concurrent Checks with one token share one call. A failing
endpoint (error, timeout, non-JSON answer) opens a breaker; while it is open or the call fails the Check is denied
with 503 `introspection_unavailable`: an opaque token that cannot be judged is never taken as valid or as
anonymous.

The client secret goes only into the request to the endpoint: never into a log line, an error or an audit event.
"""

import asyncio
import base64
import contextlib
import json
import types
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote_plus

import structlog
from jwt.utils import base64url_decode

from extauth.breaker import BreakerState, CircuitBreaker
from extauth.clock import Clock
from extauth.config.schema import IntrospectionConfig
from extauth.identity.cache import token_digest
from extauth.identity.claims import find_claim, groups_in, roles_in
from extauth.identity.http import FetchError, HttpFetcher
from extauth.identity.identities import Identities
from extauth.identity.jwt import check_times
from extauth.identity.principal import AuthenticationError, Principal
from extauth.notify import Notify, ignore
from extauth.reasons import Reason

log = structlog.get_logger("extauth.introspection")


def is_jws_shaped(token: str) -> bool:
    """Whether `token` presents itself as a JWT (three segments, the first a JSON object): such a token is judged
    as a JWT, whatever its issuer, and never introspected."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64url_decode(parts[0]))
    except (ValueError, RecursionError):
        return False
    return isinstance(header, dict)


class IntrospectionUnavailableError(AuthenticationError):
    """The endpoint failed, timed out or its breaker is open: the Check answers 503."""

    def __init__(self) -> None:
        super().__init__(Reason.INTROSPECTION_UNAVAILABLE, "the token introspection service is unavailable")


@dataclass(slots=True)
class IntrospectionStats:
    """For the metrics endpoint (extauth_introspection_*)."""

    calls: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    #: Checks that joined a call already running for the same token.
    joined: int = 0
    #: By kind: `timeout`, `http` (network, TLS, status), `invalid_answer`, `breaker_open`.
    errors: Counter[str] = field(default_factory=Counter)


T = TypeVar("T")
#: A refused answer as cached: a fresh AuthenticationError is raised from it on every hit.
Refusal = tuple[Reason, str]


class AnswerCache(Generic[T]):
    """LRU by token digest; each entry lives until the time it was put with. A capacity of 0 disables it."""

    def __init__(self, capacity: int, clock: Clock) -> None:
        self._capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> T | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        valid_until, value = entry
        if self._clock.monotonic() >= valid_until:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return value

    def put(self, digest: bytes, value: T, seconds: float) -> None:
        if not self._capacity or seconds <= 0:
            return
        self._entries[digest] = (self._clock.monotonic() + seconds, value)
        self._entries.move_to_end(digest)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


class Introspector:
    def __init__(self, config: IntrospectionConfig, clock: Clock, fetcher: HttpFetcher, identities: Identities,
                 notify: Notify = ignore) -> None:
        self.config = config
        self.stats = IntrospectionStats()
        self._clock = clock
        self._fetcher = fetcher
        self._identities = identities
        self._notify = notify
        self._active: AnswerCache[Principal] = AnswerCache(config.cache_size, clock)
        self._refused: AnswerCache[Refusal] = AnswerCache(config.negative_cache_size, clock)
        self._inflight: dict[bytes, asyncio.Task[Principal]] = {}
        self.breaker = CircuitBreaker(clock, config.breaker.failure_threshold, config.breaker.cooldown_seconds,
                                      on_change=self._breaker_changed)
        self._form, self._headers = _client_authentication(config)
        self._audiences = frozenset(config.audiences)

    async def authenticate(self, token: str) -> Principal:
        digest = token_digest(token)
        principal = self._active.get(digest)
        if principal is not None:
            self.stats.cache_hits += 1
            return principal
        refusal = self._refused.get(digest)
        if refusal is not None:
            self.stats.cache_hits += 1
            raise AuthenticationError(*refusal)
        self.stats.cache_misses += 1
        call = self._inflight.get(digest)
        if call is None:
            call = asyncio.create_task(self._introspect(token, digest))
            self._inflight[digest] = call
            call.add_done_callback(lambda _: self._inflight.pop(digest, None))
        else:
            self.stats.joined += 1
        # Shielded: a Check that Envoy gives up on must not cancel the call other Checks are waiting for.
        return await asyncio.shield(call)

    async def stop(self) -> None:
        for call in list(self._inflight.values()):
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, AuthenticationError):
                await call

    async def _introspect(self, token: str, digest: bytes) -> Principal:
        if not self.breaker.allow():
            self.stats.errors["breaker_open"] += 1
            raise IntrospectionUnavailableError()
        self.stats.calls += 1
        try:
            answer = await self._call(token)
        except (TimeoutError, FetchError, ValueError) as error:
            kind = "timeout" if isinstance(error, TimeoutError) else (
                "http" if isinstance(error, FetchError) else "invalid_answer")
            self.stats.errors[kind] += 1
            self.breaker.record_failure()
            log.warning("introspection_failed", provider=self.config.name, error=self._describe(error),
                        breaker=self.breaker.state.value)
            raise IntrospectionUnavailableError() from None
        self.breaker.record_success()
        try:
            principal = self._principal(answer)
        except AuthenticationError as refused:
            self._refused.put(digest, (refused.reason, refused.description), self.config.negative_cache_seconds)
            raise
        seconds = self.config.cache_seconds
        if principal.expires_at is not None:
            seconds = min(seconds, principal.expires_at - self._clock.now())
        self._active.put(digest, principal, seconds)
        return principal

    async def _call(self, token: str) -> Mapping[str, Any]:
        timeout = self.config.timeout_seconds
        async with asyncio.timeout(timeout):
            body = await self._fetcher.post(
                self.config.url, {"token": token, "token_type_hint": "access_token", **self._form},
                headers=self._headers, timeout=timeout, ca_file=self.config.ca_file)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
        return answer

    def _principal(self, answer: Mapping[str, Any]) -> Principal:
        """The principal an active answer describes; AuthenticationError naming the first check it fails."""
        config = self.config
        if answer.get("active") is not True:
            raise AuthenticationError(Reason.INACTIVE_TOKEN, "token is not active")
        token_use = answer.get("token_use", "access_token")
        if token_use != "access_token":
            raise AuthenticationError(Reason.INACTIVE_TOKEN, "token is not an access token")
        if answer.get("iss", config.issuer) != config.issuer:
            raise AuthenticationError(Reason.INVALID_ISSUER, "token issuer is not accepted")
        audiences = answer.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or self._audiences.isdisjoint(
                audience for audience in audiences if isinstance(audience, str)):
            raise AuthenticationError(Reason.INVALID_AUDIENCE, "token is not meant for this audience")
        expires_at = check_times(answer, self._clock.now(), config.leeway_seconds)
        subject = find_claim(answer, config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(Reason.MISSING_CLAIM, f"token lacks the {config.subject_claim!r} claim")
        return Principal(
            subject=subject,
            identity=self._identities.of(config, subject),
            issuer=config.issuer,
            provider=config.name,
            key_id=None,
            roles=roles_in(find_claim(answer, config.roles_claim)),
            groups=groups_in(find_claim(answer, config.groups_claim)),
            claims=types.MappingProxyType(dict(answer)),
            expires_at=expires_at,
        )

    def _breaker_changed(self, previous: BreakerState, state: BreakerState) -> None:
        if state is BreakerState.OPEN and previous is BreakerState.CLOSED:
            self._notify("introspection_unavailable", provider=self.config.name,
                         consecutive_failures=self.breaker.consecutive_failures,
                         retry_after_seconds=self.config.breaker.cooldown_seconds)
        elif state is BreakerState.CLOSED:
            self._notify("introspection_recovered", provider=self.config.name)

    def _describe(self, error: Exception) -> str:
        if isinstance(error, TimeoutError):
            return f"timed out after {self.config.timeout_seconds:g} s"
        return str(error)


def _client_authentication(config: IntrospectionConfig) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate extauth to the endpoint (RFC 6749 section 2.3.1: with
    `client_secret_basic`, id and secret are form-encoded before they are joined and base64-encoded)."""
    assert config.client_secret is not None, "the schema requires a client secret"
    if config.client_auth == "client_secret_post":
        return {"client_id": config.client_id, "client_secret": config.client_secret}, {}
    pair = f"{quote_plus(config.client_id)}:{quote_plus(config.client_secret)}"
    return {}, {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
