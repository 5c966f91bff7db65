"""Key stores: JWKS parsing, file/URL/OIDC sources, refresh with backoff, kid refetch with cooldown."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs
from support.identity_helpers import ISSUER, JWKS_URL, Keys, ProviderFactory, jwks_document, public_jwk

from extauth.clock import ManualClock
from extauth.config.schema import JwksConfig
from extauth.identity.http import FetchError, StaticFetcher
from extauth.identity.jwks import JwksStore, SharedSecretStore, retry_delay
from extauth.identity.keys import KeyLoadError, parse_jwks

DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"


@pytest.fixture
async def stores() -> AsyncIterator[list[JwksStore]]:
    """Collects the stores a test starts and stops them afterwards."""
    started: list[JwksStore] = []
    yield started
    for store in started:
        await store.stop()


class GatedFetcher(StaticFetcher):
    """A StaticFetcher whose answers wait until the test opens the gate."""

    def __init__(self, responses: dict[str, bytes | Exception]) -> None:
        super().__init__(responses)
        self.gate = asyncio.Event()

    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        await self.gate.wait()
        return await super().get(url, timeout=timeout, ca_file=ca_file)


def test_parse_skips_unusable_keys_and_keeps_the_rest(keys: Keys) -> None:
    """Encryption keys, symmetric keys, unknown types, bad curves and broken entries are skipped, not fatal."""
    document = jwks_document(
        public_jwk(keys.rsa, "sig"),
        public_jwk(keys.rsa_other, "enc", use="enc"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
        {"kty": "XYZ", "kid": "alien"},
        {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "curve"},
        {"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "broken"},
        {"kty": "RSA", "alg": ["RS256"], "kid": "alg-list"},
        public_jwk(keys.ec, ["not-a-string"]),  # type: ignore[arg-type]
        "not an object",
    )
    key_set, skipped = parse_jwks(document)
    assert [key.key_id for key in key_set.keys] == ["sig"]
    assert skipped == 8


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "JWKS is not valid JSON"),
        (b"[]", "JWKS is not a JSON object"),
        (b"{}", "JWKS has no 'keys' list"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "JWKS has no usable signing keys (1 skipped)"),
    ],
)
def test_parse_refuses_a_set_without_usable_keys(document: bytes, message: str) -> None:
    """A document that yields zero usable keys is a failed load, with a message saying why."""
    with pytest.raises(KeyLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_jwks(document)


async def test_file_source_loads_at_start(
    tmp_path: Path, keys: Keys, provider: ProviderFactory, clock: ManualClock
) -> None:
    """A JWKS file is read once at start and makes the store ready without any fetch."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks_document(public_jwk(keys.rsa, "rsa-1")))
    fetcher = StaticFetcher()
    store = JwksStore(provider(jwks=JwksConfig(file=path)), clock, fetcher)
    await store.start()
    assert store.ready
    assert store.keys is not None and store.keys.find("rsa-1", "RS256") is not None
    assert await store.refetch_for_unknown_kid() is store.keys
    assert not fetcher.calls


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "provider 'idp': cannot read .*jwks.json: No such file"), (b"{}", r"jwks.json: JWKS has no 'keys' list")],
)
async def test_file_source_fails_start_clearly(
    tmp_path: Path, provider: ProviderFactory, clock: ManualClock, content: bytes | None, message: str
) -> None:
    """An unreadable or invalid JWKS file stops start with an error naming the provider and the file."""
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_bytes(content)
    store = JwksStore(provider(jwks=JwksConfig(file=path)), clock, StaticFetcher())
    with pytest.raises(KeyLoadError, match=message):
        await store.start()
    assert not store.ready


async def test_unknown_kid_refetches_once_then_cools_down(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore]
) -> None:
    """A rotated-in kid is learnt by one refetch; another unknown kid within the cooldown fails fast unfetched."""
    fetcher = StaticFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "old"))})
    store = JwksStore(provider(jwks=JwksConfig(url=JWKS_URL, refetch_cooldown_seconds=30)), clock, fetcher)
    stores.append(store)
    await store.start()
    fetcher.responses[JWKS_URL] = jwks_document(public_jwk(keys.rsa, "old"), public_jwk(keys.rsa_other, "new"))

    refreshed = await store.refetch_for_unknown_kid()
    assert refreshed is not None and refreshed.find("new", "RS256") is not None
    assert fetcher.calls[JWKS_URL] == 2

    clock.advance(29)
    await store.refetch_for_unknown_kid()
    assert fetcher.calls[JWKS_URL] == 2

    clock.advance(1)
    await store.refetch_for_unknown_kid()
    assert fetcher.calls[JWKS_URL] == 3


async def test_concurrent_unknown_kids_share_one_fetch(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore]
) -> None:
    """Requests arriving while a refetch runs await that same fetch instead of starting their own."""
    fetcher = GatedFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})
    fetcher.gate.set()
    store = JwksStore(provider(), clock, fetcher)
    stores.append(store)
    await store.start()
    fetcher.gate.clear()

    waiting = [asyncio.create_task(store.refetch_for_unknown_kid()) for _ in range(20)]
    await asyncio.sleep(0)
    fetcher.gate.set()
    results = await asyncio.gather(*waiting)
    assert fetcher.calls[JWKS_URL] == 2
    assert all(result is store.keys for result in results)


async def test_refetch_is_bounded_by_the_fetch_timeout(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore]
) -> None:
    """A hanging IdP delays an unknown-kid request by at most fetch_timeout_seconds; the old keys stay."""
    fetcher = GatedFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})
    fetcher.gate.set()
    store = JwksStore(provider(jwks=JwksConfig(url=JWKS_URL, fetch_timeout_seconds=0.05)), clock, fetcher)
    stores.append(store)
    await store.start()
    loaded = store.keys
    fetcher.gate.clear()
    with capture_logs() as logs:
        assert await asyncio.wait_for(store.refetch_for_unknown_kid(), timeout=2) is loaded
    assert logs[0]["event"] == "jwks_refresh_failed"
    assert logs[0]["error"] == "timed out after 0.05 s"


async def test_keeps_last_good_keys_when_the_idp_fails(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore]
) -> None:
    """A failed refresh keeps serving the last good keys and logs how stale they are, without key material."""
    fetcher = StaticFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})
    store = JwksStore(provider(), clock, fetcher)
    stores.append(store)
    with capture_logs() as logs:
        await store.start()
    assert logs == [
        {"event": "jwks_loaded", "log_level": "info", "provider": "idp", "keys": 1, "skipped": 0, "source": JWKS_URL}
    ]
    good = store.keys

    fetcher.responses[JWKS_URL] = FetchError(JWKS_URL, "connection refused")
    clock.advance(400)
    with capture_logs() as logs:
        assert not await store.refresh()
    assert store.keys is good and store.ready
    assert logs == [
        {
            "event": "jwks_refresh_failed",
            "log_level": "warning",
            "provider": "idp",
            "error": f"GET {JWKS_URL} failed: connection refused",
            "seconds_since_last_good": 400.0,
        }
    ]


def test_retry_delay_doubles_from_one_second_up_to_the_refresh_period() -> None:
    """Backoff is 1, 2, 4, ... seconds, capped at refresh_seconds (and safe after very many failures)."""
    assert [retry_delay(failures, 60) for failures in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(10_000, 300) == 300


async def test_background_refresh_backs_off_then_returns_to_the_period(
    keys: Keys, provider: ProviderFactory, clock: ManualClock
) -> None:
    """While the IdP fails the loop retries after 1, 2, 4 ... s (capped); after a success it waits refresh_seconds."""
    document = jwks_document(public_jwk(keys.rsa, "rsa-1"))
    fetcher = StaticFetcher({JWKS_URL: FetchError(JWKS_URL, "down")})
    delays: list[float] = []
    enough = asyncio.Event()

    async def recording_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 7:
            fetcher.responses[JWKS_URL] = document
        if len(delays) == 9:
            enough.set()
            await asyncio.Event().wait()

    store = JwksStore(provider(jwks=JwksConfig(url=JWKS_URL, refresh_seconds=10)), clock, fetcher, recording_sleep,
                      jitter=lambda delay: delay)
    with capture_logs():
        await store.start()
        assert not store.ready
        await asyncio.wait_for(enough.wait(), timeout=2)
    await store.stop()
    assert delays == [1, 2, 4, 8, 10, 10, 10, 10, 10]
    assert store.ready


async def test_refresh_delays_are_jittered_by_default(
    keys: Keys, provider: ProviderFactory, clock: ManualClock
) -> None:
    """Without an injected jitter, waits vary within ±10% so replicas do not refresh in lockstep."""
    fetcher = StaticFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})
    delays: list[float] = []
    enough = asyncio.Event()

    async def recording_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 20:
            enough.set()
            await asyncio.Event().wait()

    store = JwksStore(provider(jwks=JwksConfig(url=JWKS_URL, refresh_seconds=100)), clock, fetcher, recording_sleep)
    with capture_logs():
        await store.start()
        await asyncio.wait_for(enough.wait(), timeout=2)
    await store.stop()
    assert all(90 <= delay <= 110 for delay in delays) and len(set(delays)) > 1


async def test_oidc_discovery_finds_the_jwks_uri(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore]
) -> None:
    """With oidc_discovery the store reads `{issuer}/.well-known/openid-configuration` and fetches its jwks_uri."""
    jwks_uri = "https://keys.idp.example/certs"
    fetcher = StaticFetcher({
        DISCOVERY_URL: json.dumps({"issuer": ISSUER, "jwks_uri": jwks_uri}).encode(),
        jwks_uri: jwks_document(public_jwk(keys.ec, "ec-1")),
    })
    store = JwksStore(provider(jwks=JwksConfig(oidc_discovery=True)), clock, fetcher)
    stores.append(store)
    await store.start()
    assert store.keys is not None and store.keys.find("ec-1", "ES256") is not None


@pytest.mark.parametrize(
    ("discovery", "error"),
    [
        (
            {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/keys"},
            f"names issuer 'https://evil.example', expected '{ISSUER}'",
        ),
        ({"issuer": ISSUER + "/", "jwks_uri": "https://idp.example/keys"}, "names issuer 'https://idp.example/'"),
        ({"issuer": ISSUER}, "has no jwks_uri"),
        ({"issuer": ISSUER, "jwks_uri": "file:///etc/passwd"}, "must be an https:// URL"),
        ({"issuer": ISSUER, "jwks_uri": "http://idp.example/keys"}, "must be https://"),
    ],
)
async def test_oidc_discovery_requires_the_exact_issuer_and_a_jwks_uri(
    keys: Keys, provider: ProviderFactory, clock: ManualClock, stores: list[JwksStore],
    discovery: dict[str, str], error: str,
) -> None:
    """A discovery document for another issuer (even by a trailing slash) or without jwks_uri loads nothing."""
    fetcher = StaticFetcher({
        DISCOVERY_URL: json.dumps(discovery).encode(),
        "https://evil.example/keys": jwks_document(public_jwk(keys.rsa, "rsa-1")),
        "https://idp.example/keys": jwks_document(public_jwk(keys.rsa, "rsa-1")),
    })
    store = JwksStore(provider(jwks=JwksConfig(oidc_discovery=True)), clock, fetcher)
    stores.append(store)
    with capture_logs() as logs:
        await store.start()
    assert not store.ready
    assert error in logs[0]["error"]
    assert fetcher.calls.keys() == {DISCOVERY_URL}


async def test_stop_cancels_the_refresh_task(provider: ProviderFactory, clock: ManualClock) -> None:
    """stop() ends the background refresh cleanly, leaves no task behind, and can be called again."""
    store = JwksStore(provider(), clock, StaticFetcher())
    with capture_logs():
        await store.start()
    assert len(asyncio.all_tasks()) == 2
    await store.stop()
    await store.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize(
    ("secret", "algorithms", "message"),
    [
        (b"short\n", ["HS256"], "is 5 bytes; HS256 need at least 32"),
        (b"s" * 40, ["HS256", "HS512"], "is 40 bytes; HS256, HS512 need at least 64"),
    ],
)
async def test_shared_secret_must_be_a_long_enough_hmac_key(
    tmp_path: Path, provider: ProviderFactory, secret: bytes, algorithms: list[str], message: str
) -> None:
    """Secrets shorter than the hash output of a configured algorithm (RFC 7518 §3.2) are refused at start."""
    path = tmp_path / "secret"
    path.write_bytes(secret)
    store = SharedSecretStore(provider(jwks=None, shared_secret_file=path, algorithms=algorithms))
    with pytest.raises(KeyLoadError, match=message):
        await store.start()


async def test_shared_secret_may_not_be_a_public_key(tmp_path: Path, provider: ProviderFactory, keys: Keys) -> None:
    """A PEM public key in the secret file is refused: it would invite RS/HS confusion."""
    path = tmp_path / "secret"
    path.write_bytes(
        keys.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    store = SharedSecretStore(provider(jwks=None, shared_secret_file=path, algorithms=["HS256"]))
    with pytest.raises(KeyLoadError, match="asymmetric key"):
        await store.start()
