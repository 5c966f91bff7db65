"""API keys through real Envoy and a real extauth process: a key made with `extauth apikey create` works once the
store reloads, a revoked, expired, unknown or mistyped one is 401 with its reason, the upstream never sees the key,
and the audit trail records the key's id, never the key."""

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import REPO_ROOT
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, Response, extauth_config
from extauth.devstack.processes import ManagedProcess, extauth_command, grpc_serving
from extauth.devstack.stack import StackPaths, create_empty_key_store, prepare_run_dir
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream
from extauth.documents.apikeys import ApiKeyEntry, ApiKeyStoreDocument, read_key_store, render_key_store
from extauth.identity.apikey_format import key_digest, new_api_key


@dataclass
class KeyedGateway:
    envoy: EnvoyProcess
    extauth: ExtauthProcess
    store: Path

    def apikey(self, *arguments: str) -> str:
        """`extauth apikey ...` on the store, as an operator runs it; its last line."""
        result = subprocess.run(extauth_command("apikey", *arguments, "--store", str(self.store)),
                                capture_output=True, text=True, check=True)
        return result.stdout.splitlines()[-1]

    def get(self, path: str, key: str, **headers: str) -> Response:
        return self.envoy.get(path, x_api_key=key, **headers)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
          upstream: RunningUpstream) -> Iterator[KeyedGateway]:
    """The local stack's config with an API key store that starts empty (as `make run` creates it)."""
    run_dir = tmp_path_factory.mktemp("apikeys")
    store = run_dir / "apikeys.yaml"
    create_empty_key_store(store)
    config = extauth_config(run_dir / "extauth", certs)
    config["authentication"]["api_keys"] = {"store": str(store), "watch_interval_seconds": 0.2}
    extauth = ExtauthProcess(run_dir / "extauth", config)
    try:
        extauth.wait_serving()
        envoy = EnvoyProcess(run_dir, certs, upstream.port, extauth.addresses)
        try:
            yield KeyedGateway(envoy, extauth, store)
        finally:
            envoy.stop()
    finally:
        extauth.stop()


def eventually(request: Callable[[], Response], status: int, reason_code: str | None = None,
               timeout: float = 10.0) -> Response:
    """The first response with `status` (and reason), polling while the store reloads (not instantaneous)."""
    deadline = time.monotonic() + timeout
    while True:
        response = request()
        if response.status == status and (reason_code is None or reason(response) == reason_code):
            return response
        if time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def reason(response: Response) -> str:
    return response.json()["reason"]


def test_a_key_created_with_the_cli_is_allowed_once_the_store_reloads(keyed: KeyedGateway) -> None:
    """200 as `apikey:ci-bot` with its roles; the upstream gets the identity headers and never the key."""
    key = keyed.apikey("create", "--client", "ci-bot", "--claim", "roles=reader")
    response = eventually(lambda: keyed.get("/api/orders", key), 200)
    assert response.status == 200, response.body
    seen = response.json()["headers"]
    assert (seen["x-extauth-subject"], seen["x-extauth-issuer"], seen["x-extauth-roles"]) == (
        "apikey:ci-bot", "apikey", "reader")
    assert "x-api-key" not in seen and key not in response.body.decode()


def test_a_revoked_key_is_refused_after_the_reload(keyed: KeyedGateway) -> None:
    key = keyed.apikey("create", "--client", "revoked-bot", "--claim", "roles=reader")
    assert eventually(lambda: keyed.get("/api/orders", key), 200).status == 200
    keyed.apikey("revoke", "--key", key)
    response = eventually(lambda: keyed.get("/api/orders", key), 401, "revoked_api_key")
    assert (response.status, reason(response)) == (401, "revoked_api_key")


def test_an_expired_key_is_refused(keyed: KeyedGateway) -> None:
    """An entry whose `expires` has passed (written as the store's owner would) is 401 expired_api_key."""
    key = new_api_key()
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    expired = ApiKeyEntry(id="k_expired", client="old-bot", sha256=key_digest(key).hex(), claims={"roles": "reader"},
                          created=created, expires=created + timedelta(days=1))
    temporary = keyed.store.with_name("store.tmp")
    temporary.write_text(render_key_store(ApiKeyStoreDocument(keys=[*read_key_store(keyed.store).keys, expired])))
    os.replace(temporary, keyed.store)
    response = eventually(lambda: keyed.get("/api/orders", key), 401, "expired_api_key")
    assert (response.status, reason(response)) == (401, "expired_api_key")


@pytest.mark.parametrize("mangle, expected", [
    (lambda key: new_api_key(), "unknown_api_key"),
    (lambda key: key[:-1], "malformed_api_key"),
    (lambda key: key[:20] + key[20].swapcase() + key[21:] if key[20].isalpha() else key[:20] + "x" + key[21:],
     "malformed_api_key"),
], ids=["another key", "truncated", "one character changed"])
def test_a_wrong_key_is_401_with_its_reason_and_a_challenge(
        keyed: KeyedGateway, mangle: Callable[[str], str], expected: str) -> None:
    key = keyed.apikey("create", "--client", "typo-bot", "--claim", "roles=reader")
    assert eventually(lambda: keyed.get("/api/orders", key), 200).status == 200
    response = keyed.get("/api/orders", mangle(key))
    assert (response.status, reason(response)) == (401, expected)
    assert "www-authenticate" in response.headers


def test_a_key_and_a_token_together_are_refused(keyed: KeyedGateway, certs: DevCerts) -> None:
    key = keyed.apikey("create", "--client", "double-bot", "--claim", "roles=reader")
    assert eventually(lambda: keyed.get("/api/orders", key), 200).status == 200
    token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    response = keyed.envoy.get("/api/orders", token, x_api_key=key)
    assert (response.status, reason(response)) == (401, "multiple_credentials")


def test_the_audit_trail_records_the_key_id_and_never_the_key(keyed: KeyedGateway) -> None:
    """The allow names subject, client_id and the entry's id; no record anywhere holds the key; the reload that
    added it is an `apikeys_reloaded` record."""
    key = keyed.apikey("create", "--client", "audited-bot", "--claim", "roles=reader")
    assert eventually(lambda: keyed.get("/api/orders", key), 200).status == 200
    keyed.get("/api/orders", key[:-1])
    entry = next(entry for entry in read_key_store(keyed.store).keys if entry.client == "audited-bot")
    events = keyed.extauth.audit_events(kind=None)
    decisions = [event for event in events if event["event"] == "decision"]
    allowed = [event for event in decisions if event["subject"] == "audited-bot" and event["decision"] == "allow"]
    assert allowed and (allowed[-1]["client_id"], allowed[-1]["key_id"], allowed[-1]["issuer"]) == (
        "audited-bot", entry.id, "apikey")
    assert (decisions[-1]["reason"], decisions[-1]["subject"], decisions[-1]["key_id"]) == (
        "malformed_api_key", None, None)
    assert any(event["event"] == "apikeys_reloaded" for event in events)
    trail = keyed.extauth.audit_path.read_text()  # type: ignore[union-attr]
    assert key not in trail and key[:-1] not in trail and key[4:24] not in trail


def test_a_broken_store_keeps_the_keys_working_and_is_audited(keyed: KeyedGateway) -> None:
    """A store edited into invalid YAML: the previous keys keep serving; the failure names file and line."""
    key = keyed.apikey("create", "--client", "steady-bot", "--claim", "roles=reader")
    assert eventually(lambda: keyed.get("/api/orders", key), 200).status == 200
    good = keyed.store.read_text()
    temporary = keyed.store.with_name("store.tmp")
    temporary.write_text(good + "  - id: [unclosed\n")
    os.replace(temporary, keyed.store)
    deadline = time.monotonic() + 10
    while not keyed.extauth.audit_events(kind="apikeys_reload_failed"):
        assert time.monotonic() < deadline, "no apikeys_reload_failed event"
        time.sleep(0.1)
    failed = keyed.extauth.audit_events(kind="apikeys_reload_failed")[-1]
    assert failed["errors"][0].startswith(f"{keyed.store}:")
    assert keyed.get("/api/orders", key).status == 200
    temporary.write_text(good)
    os.replace(temporary, keyed.store)


def test_the_shipped_local_stack_config_serves_a_key_added_to_run_apikeys_yaml(
        tmp_path: Path, envoy_binary: Path, certs: DevCerts, upstream: RunningUpstream) -> None:
    """README's flow on envoy/extauth.yaml as shipped: `.run` prepared as `make run` prepares it (the test's
    certificates standing in for the generated ones), then `extauth apikey create --store .run/apikeys.yaml`
    from the checkout and the key is 200 on /api/orders within seconds."""
    shutil.copytree(REPO_ROOT / "envoy", tmp_path / "envoy", ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(certs.ca_cert.parent, tmp_path / ".run" / "certs")
    paths = StackPaths(tmp_path / ".run", tmp_path / ".run" / "certs", tmp_path / "envoy" / "envoy.yaml",
                       tmp_path / "envoy" / "extauth.yaml")
    prepare_run_dir(paths)
    assert paths.api_key_store.read_text() == ""
    address = ListenAddress.parse(f"unix:{tmp_path / '.run' / 'extauth.sock'}")
    extauth = ManagedProcess("extauth", extauth_command("serve", "--config", str(paths.extauth_config)),
                             tmp_path / "extauth.log")
    try:
        extauth.wait_until(lambda: grpc_serving(address))
        envoy = EnvoyProcess(tmp_path, certs, upstream.port, [address])
        try:
            created = subprocess.run(extauth_command("apikey", "create", "--client", "ci-bot", "--claim",
                                                     "roles=reader", "--store", ".run/apikeys.yaml"),
                                     cwd=tmp_path, capture_output=True, text=True, check=True)
            key = created.stdout.splitlines()[-1]
            response = eventually(lambda: envoy.get("/api/orders", x_api_key=key), 200)
            assert response.status == 200, response.body
            assert response.json()["headers"]["x-extauth-subject"] == "apikey:ci-bot"
        finally:
            envoy.stop()
    finally:
        extauth.stop()
