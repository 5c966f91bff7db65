"""`extauth apikey create | revoke | list`: keep an API key store (docs/apikeys.md) without editing digests by hand.

Each change is a read-modify-write of the whole store under a lock on its directory (two commands never lose
each other's entry), written to a temporary file in the same directory and renamed over the store, keeping its
mode: a reload in a running extauth reads the old store or the new one, never half of one.
"""

import argparse
import contextlib
import errno
import fcntl
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic

from extauth.cli_support import EXIT_FAILED, EXIT_OK
from extauth.documents.apikeys import ApiKeyEntry, ApiKeyStoreDocument, read_key_store, render_key_store
from extauth.documents.fields import Name
from extauth.documents.policy import parse_duration
from extauth.identity.apikey_format import key_digest, key_problem, new_api_key

#: A new store file is readable by its owner only: digests are not keys, but the client list is nobody's business.
NEW_STORE_MODE = 0o600
_NAME = pydantic.TypeAdapter(Name)


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    apikey = commands.add_parser("apikey", help="create, revoke and list API keys in a key store file")
    actions = apikey.add_subparsers(required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", help="add a new key to the store and print it (its last line; the only time it is shown)",
        epilog="exit status: 0 created, 2 usage error or a store that does not load")
    create.add_argument("--client", required=True, type=_client, help="the client id the key authenticates as")
    create.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE", type=_claim,
                        help="a claim of the key's principal; a comma in VALUE makes a list (roles=reader,writer)")
    create.add_argument("--ttl", type=_ttl, metavar="DURATION",
                        help="expire after this long: 3600s, 90m, 12h, 30d (default: never)")
    _store_argument(create)
    create.set_defaults(run=_create)

    revoke = actions.add_parser("revoke", help="mark a key revoked (refused from the next reload of the store)",
                                epilog="exit status: 0 revoked (or already), 1 no such key, 2 usage error")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the key's id (as `list` and the audit events show it)")
    which.add_argument("--key", help="the key itself")
    _store_argument(revoke)
    revoke.set_defaults(run=_revoke)

    listing = actions.add_parser("list", help="show each key's id, client, dates and state (never the key)")
    _store_argument(listing)
    listing.set_defaults(run=_list)


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, required=True, metavar="FILE",
                        help="the key store (authentication.api_keys.store); `create` makes it if missing")


def _client(text: str) -> str:
    try:
        return _NAME.validate_python(text)
    except pydantic.ValidationError as error:
        raise argparse.ArgumentTypeError(error.errors()[0]["ctx"]["error"]) from None


def _claim(text: str) -> tuple[str, object]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    if "," in value:
        return name, [item.strip() for item in value.split(",") if item.strip()]
    return name, value


def _ttl(text: str) -> timedelta:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a key must live for some time")
    return timedelta(seconds=seconds)


def _create(args: argparse.Namespace) -> int:
    key = new_api_key()
    now = datetime.now(UTC).replace(microsecond=0)
    with _locked(args.store):
        store = _read(args.store, missing_is_empty=True)
        ids = {entry.id for entry in store.keys}
        key_id = _new_id(ids)
        try:
            entry = ApiKeyEntry(id=key_id, client=args.client, sha256=key_digest(key).hex(), claims=dict(args.claim),
                                created=now, expires=now + args.ttl if args.ttl else None)
        except pydantic.ValidationError as error:
            problem = error.errors()[0]  # only the claims can be wrong: the rest is made here or checked already
            raise ValueError(f"--claim {problem['loc'][1]}: {problem.get('ctx', {}).get('error', problem['msg'])}") \
                from None
        _write(args.store, ApiKeyStoreDocument(keys=[*store.keys, entry]))
    expiry = f", expires {_when(entry.expires)}" if entry.expires else ""
    print(f"created key {key_id} for client {entry.client}{expiry}; the key (shown once):")
    print(key)
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    if args.key is not None:
        problem = key_problem(args.key)
        if problem is not None:
            raise ValueError(problem)
    with _locked(args.store):
        store = _read(args.store)
        wanted = key_digest(args.key).hex() if args.key is not None else None
        index = next((index for index, entry in enumerate(store.keys)
                      if entry.id == args.id or entry.sha256 == wanted), None)
        if index is None:
            print(f"extauth apikey revoke: no such key in {args.store}", file=sys.stderr)
            return EXIT_FAILED
        entry = store.keys[index]
        if entry.revoked is not None:
            print(f"key {entry.id} (client {entry.client}) was already revoked at {_when(entry.revoked)}")
            return EXIT_OK
        revoked = entry.model_copy(update={"revoked": datetime.now(UTC).replace(microsecond=0)})
        keys = [*store.keys[:index], revoked, *store.keys[index + 1:]]
        _write(args.store, ApiKeyStoreDocument(keys=keys))
    print(f"revoked key {entry.id} (client {entry.client}); refused from the next reload of {args.store}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    for entry in _read(args.store).keys:
        state = ("revoked" if entry.revoked is not None
                 else "expired" if entry.expires is not None and entry.expires <= now else "active")
        expires = _when(entry.expires) if entry.expires else "never"
        print(f"{entry.id}  {entry.client}  created {_when(entry.created)}  expires {expires}  {state}")
    return EXIT_OK


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_id(taken: set[str]) -> str:
    while True:
        key_id = f"k_{secrets.token_hex(8)}"
        if key_id not in taken:
            return key_id


def _read(path: Path, missing_is_empty: bool = False) -> ApiKeyStoreDocument:
    """The store (ConfigError if it does not load: a command never rewrites a store it cannot read); a missing one
    is empty for `create`, which makes it, and an error for the others."""
    if not path.exists():
        if missing_is_empty:
            return ApiKeyStoreDocument()
        raise FileNotFoundError(errno.ENOENT, "no such key store", str(path))
    return read_key_store(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the store's directory: the store file itself is replaced, so it cannot hold one."""
    directory = os.open(path.resolve().parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)


def _write(path: Path, store: ApiKeyStoreDocument) -> None:
    """Replace the store atomically, keeping its mode (a symlinked store, as a mounted Secret, is written through
    to its target)."""
    target = path.resolve()
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else NEW_STORE_MODE
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(render_key_store(store))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
