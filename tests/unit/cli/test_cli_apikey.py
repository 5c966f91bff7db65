"""`extauth apikey create | revoke | list`: the key is printed once as the last line, the store holds its digest,
and every change replaces the store atomically without losing a concurrent one."""

import os
import stat
import threading
from pathlib import Path

import pytest

from extauth.cli import main
from extauth.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from extauth.clock import SystemClock
from extauth.config.schema import ApiKeysConfig
from extauth.documents.apikeys import read_key_store
from extauth.identity.apikey_format import key_digest, key_problem
from extauth.identity.apikeys import ApiKeys
from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason


def create(store: Path, capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    assert main(["apikey", "create", "--store", str(store), *arguments]) == EXIT_OK
    return capsys.readouterr().out.splitlines()[-1]


def authenticate(store: Path, key: str) -> object:
    keys = ApiKeys(ApiKeysConfig(store=store), SystemClock())
    keys.store.load()
    return keys.authenticate(key)


def test_create_prints_the_key_last_and_stores_only_its_digest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last line is a well-formed key that authenticates as the client with its claims; the store file
    holds its SHA-256 and nowhere the key; a new store is readable by its owner only."""
    store = tmp_path / "keys.yaml"
    key = create(store, capsys, "--client", "ci-bot", "--claim", "roles=reader,writer", "--claim", "team=infra")
    assert key_problem(key) is None
    text = store.read_text()
    assert key not in text and key[4:20] not in text and key_digest(key).hex() in text
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    principal = authenticate(store, key)
    assert principal.subject == "ci-bot" and principal.roles == {"reader", "writer"}  # type: ignore[attr-defined]
    assert principal.claims["team"] == "infra"  # type: ignore[attr-defined]


def test_create_appends_and_keeps_the_mode_of_an_existing_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing (empty, as `make run` creates it) store gets the entry and keeps its permissions."""
    store = tmp_path / "keys.yaml"
    store.touch(mode=0o640)
    os.chmod(store, 0o640)
    first = create(store, capsys, "--client", "one")
    second = create(store, capsys, "--client", "two", "--ttl", "30d")
    assert stat.S_IMODE(store.stat().st_mode) == 0o640
    entries = read_key_store(store).keys
    assert [entry.client for entry in entries] == ["one", "two"]
    assert entries[0].expires is None and entries[1].expires is not None
    assert (entries[1].expires - entries[1].created).days == 30
    assert authenticate(store, first) != authenticate(store, second)


def test_a_symlinked_store_is_written_through_to_its_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As a mounted Secret is: the link stays a link."""
    target = tmp_path / "data" / "keys.yaml"
    target.parent.mkdir()
    target.touch()
    link = tmp_path / "keys.yaml"
    link.symlink_to(target)
    create(link, capsys, "--client", "one")
    assert link.is_symlink() and len(read_key_store(target).keys) == 1


def test_concurrent_creates_lose_no_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's read-modify-write holds a lock on the store's directory."""
    store = tmp_path / "keys.yaml"
    threads = [threading.Thread(target=main, args=(["apikey", "create", "--client", f"c{n}", "--store", str(store)],))
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(entry.client for entry in read_key_store(store).keys) == sorted(f"c{n}" for n in range(8))
    assert not [path for path in tmp_path.iterdir() if path.name != "keys.yaml"]  # no temporary file left


def test_revoke_by_id_or_by_key_marks_the_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Either way the key is refused as revoked_api_key after the store is read again; revoking twice is fine."""
    store = tmp_path / "keys.yaml"
    by_id, by_key = create(store, capsys, "--client", "one"), create(store, capsys, "--client", "two")
    key_id = read_key_store(store).keys[0].id
    assert main(["apikey", "revoke", "--id", key_id, "--store", str(store)]) == EXIT_OK
    assert main(["apikey", "revoke", "--key", by_key, "--store", str(store)]) == EXIT_OK
    assert main(["apikey", "revoke", "--key", by_key, "--store", str(store)]) == EXIT_OK
    assert "already revoked" in capsys.readouterr().out
    for key in (by_id, by_key):
        with pytest.raises(AuthenticationError) as caught:
            authenticate(store, key)
        assert caught.value.reason is Reason.REVOKED_API_KEY


def test_revoke_of_an_unknown_key_fails_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "keys.yaml"
    create(store, capsys, "--client", "one")
    before = store.read_text()
    assert main(["apikey", "revoke", "--id", "k_nope", "--store", str(store)]) == EXIT_FAILED
    assert main(["apikey", "revoke", "--key", "eak_typo", "--store", str(store)]) == EXIT_USAGE
    assert store.read_text() == before


def test_list_shows_ids_clients_and_states_never_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "keys.yaml"
    key = create(store, capsys, "--client", "one")
    create(store, capsys, "--client", "two")
    main(["apikey", "revoke", "--key", key, "--store", str(store)])
    capsys.readouterr()
    assert main(["apikey", "list", "--store", str(store)]) == EXIT_OK
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert [(row[1], row[-3:]) for row in rows] == [("one", ["expires", "never", "revoked"]),
                                                    ("two", ["expires", "never", "active"])]
    assert key not in out and key_digest(key).hex() not in out


def test_a_store_that_does_not_load_is_never_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """create refuses (exit 2, file:line) rather than replacing a broken store with one holding only the new key."""
    store = tmp_path / "keys.yaml"
    store.write_text("keys:\n  - {id: a}\n")
    assert main(["apikey", "create", "--client", "one", "--store", str(store)]) == EXIT_USAGE
    assert f"{store}:2: keys[0].client: Field required" in capsys.readouterr().err
    assert store.read_text() == "keys:\n  - {id: a}\n"
