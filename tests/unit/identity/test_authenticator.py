"""Authenticator: the per-request flow (extract → cache → issuer → verify → cache) and its lifecycle."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.identity_helpers import JWKS_URL, NOW, Keys, Mint, ProviderFactory, jwks_document, public_jwk

from extauth.clock import ManualClock
from extauth.config.schema import AuthenticationConfig, JwksConfig
from extauth.identity.authenticator import Authenticator
from extauth.identity.http import FetchError, StaticFetcher
from extauth.identity.keys import KeyLoadError
from extauth.identity.principal import AuthenticationError, KeysUnavailableError
from extauth.reasons import Reason


@pytest.fixture
def fetcher(keys: Keys) -> StaticFetcher:
    return StaticFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})


@pytest.fixture
async def authenticator(
    provider: ProviderFactory, clock: ManualClock, fetcher: StaticFetcher
) -> AsyncIterator[Authenticator]:
    """A started authenticator with one JWKS-by-URL provider and the default `Authorization: Bearer` source."""
    authenticator = Authenticator(AuthenticationConfig(providers=[provider()]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    yield authenticator
    await authenticator.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def reason_for(authenticator: Authenticator, headers: dict[str, str]) -> Reason:
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(headers)
    return caught.value.reason


async def test_no_credentials_is_none(authenticator: Authenticator) -> None:
    """A request without a token is anonymous (None); deciding whether that is allowed is the policy's job."""
    assert await authenticator.authenticate({}) is None


async def test_valid_token_yields_a_principal(authenticator: Authenticator, mint: Mint, keys: Keys) -> None:
    """A valid bearer token becomes a Principal of the provider that issued it."""
    principal = await authenticator.authenticate(bearer(mint(keys.rsa, "RS256", roles=["admin"])))
    assert principal is not None
    assert (principal.subject, principal.provider, principal.roles) == ("alice", "idp", {"admin"})


async def test_cache_hit_skips_verification_and_never_suspends(
    authenticator: Authenticator, mint: Mint, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second use of a token returns the cached Principal without calling jwt.decode or awaiting anything."""
    calls = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    headers = bearer(mint(keys.rsa, "RS256"))
    first = await authenticator.authenticate(headers)
    coroutine = authenticator.authenticate(headers)
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)
    assert finished.value.value is first
    assert calls == 1


async def test_cached_token_still_expires_at_exp(
    authenticator: Authenticator, mint: Mint, keys: Keys, clock: ManualClock
) -> None:
    """Past `exp` (+ leeway) a cached token is verified again and refused as expired."""
    headers = bearer(mint(keys.rsa, "RS256", exp=NOW + 60))
    assert await authenticator.authenticate(headers) is not None
    clock.advance(60 + 30)
    assert await reason_for(authenticator, headers) == Reason.TOKEN_EXPIRED


@pytest.mark.parametrize("issuer", ["https://other.example", None])
async def test_untrusted_or_missing_issuer_is_unknown(
    authenticator: Authenticator, mint: Mint, keys: Keys, issuer: object
) -> None:
    """A token whose `iss` names no configured provider, or that has none, is refused."""
    assert await reason_for(authenticator, bearer(mint(keys.rsa, "RS256", iss=issuer))) == Reason.UNKNOWN_ISSUER


async def test_failures_are_not_cached(authenticator: Authenticator, mint: Mint, keys: Keys) -> None:
    """A refused token is refused again on reuse (errors are never cached as successes)."""
    headers = bearer(mint(keys.rsa_other, "RS256"))
    for _ in range(2):
        assert await reason_for(authenticator, headers) == Reason.INVALID_SIGNATURE


async def test_too_large_and_malformed_tokens(authenticator: Authenticator) -> None:
    """Size is checked before anything else; non-JWT text is malformed."""
    assert await reason_for(authenticator, bearer("a" * 9000)) == Reason.TOKEN_TOO_LARGE
    assert await reason_for(authenticator, bearer("not-a-jwt")) == Reason.MALFORMED_TOKEN


async def test_keys_unavailable_until_the_first_load(
    provider: ProviderFactory, clock: ManualClock, mint: Mint, keys: Keys
) -> None:
    """With the IdP down since start the authenticator is not ready and its issuer's tokens get a 503 reason."""
    fetcher = StaticFetcher({JWKS_URL: FetchError(JWKS_URL, "connection refused")})
    authenticator = Authenticator(AuthenticationConfig(providers=[provider()]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    try:
        assert not authenticator.ready
        with pytest.raises(KeysUnavailableError):
            await authenticator.authenticate(bearer(mint(keys.rsa, "RS256")))
        fetcher.responses[JWKS_URL] = jwks_document(public_jwk(keys.rsa, "rsa-1"))
        with capture_logs():
            await authenticator._stores[0].refresh()  # type: ignore[attr-defined]
        assert authenticator.ready
        assert await authenticator.authenticate(bearer(mint(keys.rsa, "RS256"))) is not None
    finally:
        await authenticator.stop()


async def test_ready_with_no_providers(clock: ManualClock) -> None:
    """An authenticator without providers is ready at once (every request is anonymous or unknown issuer)."""
    authenticator = Authenticator(AuthenticationConfig(), clock)
    await authenticator.start()
    assert authenticator.ready
    await authenticator.stop()


async def test_start_fails_on_a_bad_key_file_and_leaves_nothing_running(
    tmp_path: Path, provider: ProviderFactory, clock: ManualClock, fetcher: StaticFetcher
) -> None:
    """An invalid key file fails start with its error, after stopping the other providers' refresh tasks."""
    config = AuthenticationConfig(
        providers=[
            provider(),
            provider(name="broken", issuer="https://broken.example", jwks=JwksConfig(file=tmp_path / "missing"),
                     primary=False),
        ]
    )
    authenticator = Authenticator(config, clock, fetcher)
    with capture_logs(), pytest.raises(KeyLoadError, match="provider 'broken': cannot read"):
        await authenticator.start()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_providers_are_chosen_by_issuer(
    provider: ProviderFactory, clock: ManualClock, fetcher: StaticFetcher, mint: Mint, keys: Keys, secret_file: Path
) -> None:
    """Each token is verified by the provider named by its `iss`, with that provider's keys only."""
    secret_provider = provider(
        name="internal", issuer="https://internal", jwks=None, shared_secret_file=secret_file, algorithms=["HS256"],
        primary=False,
    )
    authenticator = Authenticator(AuthenticationConfig(providers=[provider(), secret_provider]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    try:
        internal = await authenticator.authenticate(bearer(mint(keys.secret, "HS256", iss="https://internal")))
        assert internal is not None and internal.provider == "internal"
        assert await reason_for(authenticator, bearer(mint(keys.secret, "HS256"))) == Reason.DISALLOWED_ALGORITHM
    finally:
        await authenticator.stop()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(token=st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9_=-]{0,40}(\.[A-Za-z0-9_=-]{0,40}){2}", fullmatch=True))
async def test_arbitrary_tokens_only_ever_raise_authentication_error(
    authenticator: Authenticator, token: str
) -> None:
    """Whatever string arrives as a bearer token, authenticate returns or raises AuthenticationError."""
    with contextlib.suppress(AuthenticationError):
        await authenticator.authenticate(bearer(token))


async def test_rotated_key_is_learnt_by_one_refetch_and_unknown_kids_then_fail_fast(
    authenticator: Authenticator, fetcher: StaticFetcher, mint: Mint, keys: Keys
) -> None:
    """A new kid costs one JWKS fetch and is accepted; another unknown kid within the cooldown fails unfetched."""
    fetcher.responses[JWKS_URL] = jwks_document(public_jwk(keys.rsa, "rsa-1"), public_jwk(keys.rsa_other, "rsa-2"))
    with capture_logs():
        principal = await authenticator.authenticate(bearer(mint(keys.rsa_other, "RS256", kid="rsa-2")))
    assert principal is not None and principal.key_id == "rsa-2"
    assert fetcher.calls[JWKS_URL] == 2
    assert await reason_for(authenticator, bearer(mint(keys.rsa_other, "RS256", kid="rsa-3"))) == Reason.UNKNOWN_KEY
    assert fetcher.calls[JWKS_URL] == 2
