"""API keys: the store file (file:line errors, reloads that keep the last good store) and a key in, a principal
or a specific 401 reason out."""

import asyncio
import hashlib
import hmac
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from extauth.clock import ManualClock
from extauth.config.schema import AuthenticationConfig, Config, ForwardConfig, JwtProviderConfig
from extauth.decision import Decision
from extauth.documents.apikeys import ApiKeyEntry, ApiKeyStoreDocument, read_key_store, render_key_store
from extauth.documents.errors import ConfigError
from extauth.identity.apikey_format import key_digest, new_api_key
from extauth.identity.apikeys import ApiKeys
from extauth.identity.authenticator import Authenticator
from extauth.identity.identities import Identities
from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason
from extauth.respond import Responder

NOW = 1_700_000_000.0
CREATED = datetime.fromtimestamp(NOW - 3600, UTC)


def entry(key: str, client: str = "ci-bot", **fields: Any) -> ApiKeyEntry:
    return ApiKeyEntry(id=fields.pop("id", f"k_{client}"), client=client, sha256=key_digest(key).hex(),
                       created=CREATED, **fields)


def write_store(path: Path, *entries: ApiKeyEntry) -> Path:
    path.write_text(render_key_store(ApiKeyStoreDocument(keys=list(entries))))
    return path


def api_keys(store: Path, clock: ManualClock | None = None, **config: Any) -> ApiKeys:
    keys = ApiKeys(AuthenticationConfig(api_keys={"store": store, **config}).api_keys, clock or ManualClock(NOW))
    keys.store.load()
    return keys


def reason_of(keys: ApiKeys, key: str) -> Reason:
    with pytest.raises(AuthenticationError) as caught:
        keys.authenticate(key)
    return caught.value.reason


def test_a_stored_key_becomes_the_principal_of_its_client(tmp_path: Path) -> None:
    """Subject and client_id are the client, the identity is qualified by `api_keys.name`, roles and groups come
    from the entry's claims, and `key_id` names the entry (what the audit event records), never the key."""
    key = new_api_key()
    keys = api_keys(write_store(tmp_path / "keys.yaml",
                                entry(key, claims={"roles": "reader,writer", "groups": ["ops team"], "tier": "gold"})))
    principal = keys.authenticate(key)
    assert (principal.subject, principal.identity, principal.issuer, principal.provider, principal.key_id) == (
        "ci-bot", "apikey:ci-bot", "apikey", "apikey", "k_ci-bot")
    assert principal.roles == {"reader", "writer"} and principal.groups == {"ops team"}
    assert dict(principal.claims) == {"roles": "reader,writer", "groups": ["ops team"], "tier": "gold",
                                      "sub": "ci-bot", "iss": "apikey", "client_id": "ci-bot"}


def test_an_unknown_well_formed_key_is_unknown_api_key(tmp_path: Path) -> None:
    keys = api_keys(write_store(tmp_path / "keys.yaml", entry(new_api_key())))
    assert reason_of(keys, new_api_key()) is Reason.UNKNOWN_API_KEY


def test_a_malformed_key_is_refused_without_a_store_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo'd key never reaches the store: the checksum refuses it first."""
    key = new_api_key()
    keys = api_keys(write_store(tmp_path / "keys.yaml", entry(key)))
    monkeypatch.setattr(keys.store, "find", lambda digest: pytest.fail("looked up"))
    assert reason_of(keys, key[:-1]) is Reason.MALFORMED_API_KEY
    assert reason_of(keys, key.upper()) is Reason.MALFORMED_API_KEY


def test_the_lookup_is_by_full_digest_and_compared_in_constant_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is asked for the SHA-256 of the whole key, and the stored digest is compared with
    hmac.compare_digest: nothing in the path compares the key, or part of it, byte by byte."""
    key = new_api_key()
    keys = api_keys(write_store(tmp_path / "keys.yaml", entry(key)))
    asked: list[bytes] = []
    compared: list[tuple[bytes, bytes]] = []
    find = keys.store.find
    monkeypatch.setattr(keys.store, "find", lambda digest: asked.append(digest) or find(digest))
    compare = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or compare(a, b))
    keys.authenticate(key)
    assert asked == [hashlib.sha256(key.encode()).digest()]
    assert compared == [(asked[0], asked[0])]


def test_a_revoked_key_is_revoked_api_key(tmp_path: Path) -> None:
    key = new_api_key()
    keys = api_keys(write_store(tmp_path / "keys.yaml", entry(key, revoked=CREATED)))
    assert reason_of(keys, key) is Reason.REVOKED_API_KEY


def test_a_key_works_until_its_expiry_by_the_injected_clock(tmp_path: Path) -> None:
    """Valid one second before `expires`, expired_api_key from that instant on."""
    key = new_api_key()
    clock = ManualClock(NOW)
    keys = api_keys(write_store(tmp_path / "keys.yaml", entry(key, expires=datetime.fromtimestamp(NOW + 60, UTC))),
                    clock)
    clock.set(NOW + 59)
    assert keys.authenticate(key).subject == "ci-bot"
    clock.set(NOW + 60)
    assert reason_of(keys, key) is Reason.EXPIRED_API_KEY


def test_an_empty_or_comment_only_store_holds_no_keys(tmp_path: Path) -> None:
    """A deployment can mount the store before the first key exists."""
    for text in ("", "# no keys yet\n", "keys: []\n"):
        (tmp_path / "keys.yaml").write_text(text)
        assert read_key_store(tmp_path / "keys.yaml").keys == []


DIGEST = "a" * 64
BROKEN_STORES = {
    "digest not hex": ("keys:\n  - id: a\n    client: c\n    sha256: xyz\n    created: 2026-01-01T00:00:00Z\n",
                       ":4: keys[0].sha256: String should match pattern"),
    "unknown field": (f"keys:\n  - id: a\n    client: c\n    sha256: {DIGEST}\n    created: 2026-01-01T00:00:00Z\n"
                      "    key: eak_oops\n", ":6: keys[0].key: unknown field"),
    "time without zone": (f"keys:\n  - id: a\n    client: c\n    sha256: {DIGEST}\n    created: 2026-01-01 00:00:00\n",
                          ":5: keys[0].created: Input should have timezone info"),
    "reserved claim": (f"keys:\n  - id: a\n    client: c\n    sha256: {DIGEST}\n    created: 2026-01-01T00:00:00Z\n"
                       "    claims:\n      client_id: other\n",
                       ":7: keys[0].claims.client_id: 'client_id' is set from the entry's client"),
    "client with a colon": (f"keys:\n  - id: a\n    client: 'x:y'\n    sha256: {DIGEST}\n"
                            "    created: 2026-01-01T00:00:00Z\n", ":3: keys[0].client: 'x:y' must be 1-63"),
    "same digest twice": (f"keys:\n  - {{id: a, client: c, sha256: {DIGEST}, created: 2026-01-01T00:00:00Z}}\n"
                          f"  - {{id: b, client: c, sha256: {DIGEST}, created: 2026-01-01T00:00:00Z}}\n",
                          ":3: keys[1].sha256: the same sha256 as keys[0]"),
    "same id twice": (f"keys:\n  - {{id: a, client: c, sha256: {DIGEST}, created: 2026-01-01T00:00:00Z}}\n"
                      f"  - {{id: a, client: c, sha256: {'b' * 64}, created: 2026-01-01T00:00:00Z}}\n",
                      ":3: keys[1].id: the same id as keys[0]"),
    "two documents": ("keys: []\n---\nkeys: []\n", ": expected one YAML document, found 2"),
}


@pytest.mark.parametrize("text, expected", BROKEN_STORES.values(), ids=BROKEN_STORES.keys())
def test_a_broken_store_names_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_key_store(path)
    assert any(str(issue).startswith(f"{path}{expected}") for issue in caught.value.issues), str(caught.value)


async def test_a_changed_store_is_swapped_in_and_a_broken_one_keeps_the_last_good(tmp_path: Path) -> None:
    """A reload adds new keys and applies revocations; a store that stops loading changes nothing, and the
    failure is reported (audit) with file:line errors."""
    first, second = new_api_key(), new_api_key()
    path = write_store(tmp_path / "keys.yaml", entry(first))
    keys = api_keys(path)
    notified: list[tuple[str, dict[str, Any]]] = []
    keys.store._notify = lambda event, **fields: notified.append((event, fields))
    assert not keys.store.changed()
    write_store(path, entry(first, revoked=CREATED), entry(second, client="nightly", id="k2"))
    assert keys.store.changed()
    with capture_logs():
        assert await keys.store.reload("file_change")
    assert reason_of(keys, first) is Reason.REVOKED_API_KEY
    assert keys.authenticate(second).subject == "nightly"
    path.write_text("keys:\n  - id: [broken\n")
    with capture_logs():
        assert not await keys.store.reload("file_change")
    assert keys.authenticate(second).subject == "nightly"
    assert [event for event, _ in notified] == ["apikeys_reloaded", "apikeys_reload_failed"]
    failed = notified[1][1]
    assert failed["serving_keys"] == 2 and failed["errors"][0].startswith(f"{path}:3: invalid YAML")
    path.unlink()
    with capture_logs():
        assert not await keys.store.reload("file_change")
    assert keys.authenticate(second).subject == "nightly"


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str]:
    key = new_api_key()
    return write_store(tmp_path / "keys.yaml", entry(key, claims={"roles": "reader"})), key


def authenticator(store: Path, **api_keys: Any) -> Authenticator:
    authenticator = Authenticator(AuthenticationConfig(api_keys={"store": store, **api_keys}), ManualClock(NOW))
    authenticator.load_key_files()
    return authenticator


#: Ways to send one key, by whether `authorization_scheme` is on.
KEY_SPELLINGS = st.sampled_from([
    ("x-api-key", "{key}", False), ("x-api-key", "  {key}\t", False), ("authorization", "ApiKey {key}", True),
    ("authorization", "apikey   {key}", True), ("authorization", "APIKEY {key} ", True)])


@given(spelling=KEY_SPELLINGS)
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
async def test_a_key_is_read_from_its_header_or_the_apikey_scheme(
        store: tuple[Path, str], spelling: tuple[str, str, bool]) -> None:
    """The configured header (surrounding whitespace ignored), or `Authorization: ApiKey` in any case of the
    scheme when `authorization_scheme` is on; without it that Authorization header is no credential at all."""
    path, key = store
    header, template, needs_scheme = spelling
    headers = {header: template.format(key=key)}
    principal = await authenticator(path, authorization_scheme=True).authenticate(headers)
    assert principal is not None and principal.identity == "apikey:ci-bot"
    if needs_scheme:
        assert await authenticator(path).authenticate(headers) is None


@pytest.mark.parametrize("headers", [
    {"x-api-key": "{key}", "authorization": "Bearer eyJhbGciOi.x.y"},
    {"x-api-key": "{key}", "authorization": "ApiKey {key}"},
], ids=["key and token", "key twice"])
async def test_two_credentials_in_one_request_are_refused(store: tuple[Path, str], headers: dict[str, str]) -> None:
    """The upstream might believe the other credential: neither wins, the request is 401 multiple_credentials."""
    path, key = store
    with pytest.raises(AuthenticationError) as caught:
        await authenticator(path, authorization_scheme=True).authenticate(
            {name: value.format(key=key) for name, value in headers.items()})
    assert caught.value.reason is Reason.MULTIPLE_CREDENTIALS


async def test_a_bad_key_is_refused_never_downgraded_to_anonymous(store: tuple[Path, str]) -> None:
    """A key that fails raises (401) instead of answering "no credentials", which a public route would allow."""
    path, _ = store
    with pytest.raises(AuthenticationError) as caught:
        await authenticator(path).authenticate({"x-api-key": "eak_nope"})
    assert caught.value.reason is Reason.MALFORMED_API_KEY


def test_a_primary_subject_reading_as_an_api_key_identity_is_refused() -> None:
    """A JWT `sub` of `apikey:ci-bot` from the primary provider would be forwarded as the key's identity."""
    provider = JwtProviderConfig(name="dev", issuer="https://idp", audiences=["a"], primary=True,
                                 jwks={"url": "https://idp/jwks"})
    with pytest.raises(AuthenticationError) as caught:
        Identities([provider], 1024, ["apikey"]).of(provider, "APIKEY:ci-bot")
    assert caught.value.reason is Reason.INVALID_SUBJECT


def test_the_key_header_is_removed_from_every_allowed_request() -> None:
    """The upstream never sees the key: its header is in `headers_to_remove` of every allow."""
    response = Responder(ForwardConfig(), ("x-api-key",)).render(Decision(True, Reason.PUBLIC_ROUTE), "r")
    assert "x-api-key" in response.ok_response.headers_to_remove


BAD_CONFIGS = {
    "name of a provider": ({"name": "dev"}, {}, "api_keys.name 'dev' is also the name or issuer of providers[0]"),
    "header read as a token": ({}, {"token_sources": [{"header": "x-api-key"}]},
                               "token_sources[0] reads the API key's header as a token"),
    "scheme without stripping": ({"authorization_scheme": True}, {"forward": {"strip_authorization": False}},
                                 "needs forward.strip_authorization: true"),
}


@pytest.mark.parametrize("api_keys, authentication, message", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_configs_that_would_confuse_a_key_with_another_credential_are_refused(
        tmp_path: Path, api_keys: dict[str, Any], authentication: dict[str, Any], message: str) -> None:
    provider = {"name": "dev", "issuer": "https://idp", "audiences": ["a"], "jwks": {"url": "https://idp/jwks"}}
    with pytest.raises(ValidationError, match=re.escape(message)):
        AuthenticationConfig(providers=[provider], api_keys={"store": tmp_path / "k.yaml", **api_keys},
                             **authentication)


def test_the_key_header_cannot_be_an_audited_header(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"audit\.headers lists 'x-client-key'"):
        Config(policy={"path": tmp_path}, audit={"headers": ["x-client-key"]},
               authentication={"api_keys": {"store": tmp_path / "k.yaml", "header": "x-client-key"}})


async def test_sighup_reloads_the_store_even_without_the_watch(store: tuple[Path, str]) -> None:
    """With `watch: false` a new key is unknown until the reload SIGHUP requests, then accepted."""
    path, _ = store
    authenticator_ = authenticator(path, watch=False)
    await authenticator_.start()
    try:
        added = new_api_key()
        write_store(path, entry(added, client="late"))
        with pytest.raises(AuthenticationError):
            await authenticator_.authenticate({"x-api-key": added})
        with capture_logs():
            authenticator_.request_api_key_reload("sighup")
            await asyncio.gather(*authenticator_._api_key_reloads)
        principal = await authenticator_.authenticate({"x-api-key": added})
        assert principal is not None and principal.subject == "late"
    finally:
        await authenticator_.stop()
