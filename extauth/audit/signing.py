"""Signed checkpoints: what makes a forged chain or a cut-off tail detectable (docs/audit.md#signed-checkpoints).

The hash chain (chain.py) proves a file consistent with itself, but whoever can write the file can recompute
every hash: rewrite a chain, or cut its tail and append a new `audit_closed`. A checkpoint is a chain line
signed with the writer's Ed25519 key: the signature covers the line's JSON as rendered without its own
`signature` and `hash` fields, and so its `chain`, `seq` and `prev_hash` (the hash of the line before it,
which links every earlier line). Without the private key nobody can produce one. The writer signs an
`audit_checkpoint` line after `audit_started`, every `checkpoint_every_events` lines or
`checkpoint_every_seconds`, and the closing `audit_closed` line, so with the public key a verifier knows:
every line up to the last checkpoint is the writer's; a chain without a valid checkpoint is not; lines after
the last checkpoint are an unsealed tail (a running writer's newest lines, or a truncated and extended file).

Signing runs in the writer task once per checkpoint (about 30 µs), never per event.
"""

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from extauth.config.files import read_key_file
from extauth.config.schema import AuditConfig
from extauth.documents.errors import ConfigError

CHECKPOINT_EVENT = "audit_checkpoint"
#: Prefixed to every signed message, so a checkpoint signature cannot be passed off as anything else.
SIGNATURE_DOMAIN = b"extauth audit checkpoint v1\n"
PRIVATE_KEY_NAME = "audit-signing.key"
PUBLIC_KEY_NAME = "audit-signing.pub"
_SIGNATURE_SUFFIX = re.compile(r',"signature":"([A-Za-z0-9_-]{86})"}$')


def key_id(public_key: Ed25519PublicKey) -> str:
    """Names the key in each checkpoint, so a verifier holding several keys (rotation) knows which to use."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The PEM private key at `path`; ValueError saying what is wrong with it otherwise."""
    data = read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 private key "
                         "(create one with `extauth audit keygen DIR`)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key (convenient on the host that signs)."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise ValueError(f"{path} is not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class CheckpointSigner:
    """The writer's key and cadence: a checkpoint after `every_events` lines or `every_seconds`, whichever first."""

    private_key: Ed25519PrivateKey
    every_events: int = 1000
    every_seconds: float = 10.0
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id(self.private_key.public_key()))

    @classmethod
    def from_config(cls, audit: AuditConfig) -> "CheckpointSigner | None":
        """None without `audit.signing_key`; a key that cannot be used stops the start (ConfigError), since
        running unsigned would quietly drop the guarantee the operator asked for."""
        if audit.signing_key is None:
            return None
        try:
            key = load_signing_key(audit.signing_key)
        except ValueError as error:
            raise ConfigError.single(audit.signing_key, str(error), field="audit.signing_key") from None
        return cls(key, audit.checkpoint_every_events, audit.checkpoint_every_seconds)

    def sign(self, rendered: str) -> str:
        """A rendered JSON object → the same object with `signature` appended (before the chain adds `hash`)."""
        signature = self.private_key.sign(SIGNATURE_DOMAIN + rendered.encode())
        return f'{rendered[:-1]},"signature":"{base64.urlsafe_b64encode(signature).rstrip(b"=").decode()}"}}'


@dataclass
class Verifier:
    """Checks checkpoint signatures against the public keys a verifier was given, by `key_id`."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def of(cls, public_keys: Iterable[Ed25519PublicKey]) -> "Verifier":
        return cls({key_id(key): key for key in public_keys})

    def problem(self, body: str, claimed_key_id: object) -> str | None:
        """`body`: a line without its `hash` field; `claimed_key_id`: its `key_id`. None when its signature
        verifies, else what is wrong."""
        match = _SIGNATURE_SUFFIX.search(body)
        if match is None:
            return "is not signed (a checkpoint or seal written without the key)"
        key = self.keys.get(claimed_key_id) if isinstance(claimed_key_id, str) else None
        if key is None:
            return f"is signed by key {claimed_key_id!r}, not by any of the given public keys"
        signature = base64.urlsafe_b64decode(match[1] + "==")
        try:
            key.verify(signature, SIGNATURE_DOMAIN + (body[:match.start()] + "}").encode())
        except InvalidSignature:
            return "has a signature that does not verify (forged, or the line was edited)"
        return None


def write_key_pair(directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """`DIR/audit-signing.key` (0600 from the first byte) and `DIR/audit-signing.pub`; an existing pair is kept
    unless `force`, so restarting the dev stack does not orphan the signatures already written."""
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if private_path.is_file() and public_path.is_file() and not force:
        return private_path, public_path
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    private_path.unlink(missing_ok=True)
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(private_pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path
