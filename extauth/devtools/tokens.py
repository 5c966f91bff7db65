"""Dev tokens signed with the dev key from `create_dev_certs`, for trying policies by hand and for tests."""

import errno
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_ID, DEV_KEY_VARIABLE
from extauth.devtools.certs import DevCerts


def mint_token(
    key_file: Path,
    *,
    subject: str,
    claims: Mapping[str, object] = {},
    ttl_seconds: int = 3600,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    now: float | None = None,
) -> str:
    """An RS256 token with the registered claims filled in; `claims` are applied last so a test can
    override any of them (a wrong `aud`, a list audience) to build a token that must be rejected."""
    return mint_tokens(key_file, 1, subject=subject, claims=claims, ttl_seconds=ttl_seconds, issuer=issuer,
                       audience=audience, now=now)[0]


def mint_tokens(
    key_file: Path,
    count: int,
    *,
    subject: str,
    claims: Mapping[str, object] = {},
    ttl_seconds: int = 3600,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    now: float | None = None,
) -> list[str]:
    """`count` tokens like `mint_token`'s, each distinct by its `jti`. The key is loaded once: loading (with
    its consistency checks) costs ~100× a signature, so the bench's thousands of cache-missing tokens take
    seconds, not minutes."""
    key = _private_key(key_file)
    issued_at = int(time.time() if now is None else now)
    registered = {"iss": issuer, "sub": subject, "aud": audience, "iat": issued_at, "nbf": issued_at,
                  "exp": issued_at + ttl_seconds}
    return [jwt.encode({**registered, "jti": uuid.uuid4().hex, **claims}, key, algorithm="RS256",
                       headers={"kid": DEV_KEY_ID})
            for _ in range(count)]


def dev_signing_key() -> Path:
    """The key `extauth token` signs with when --key is not given: $EXTAUTH_DEV_KEY, else the one `make run`
    created in the checkout this package runs from, so the command works from any directory."""
    from extauth.devstack.stack import StackPaths  # the stack imports this module

    configured = os.environ.get(DEV_KEY_VARIABLE)
    path = Path(configured) if configured else DevCerts.in_directory(StackPaths.shipped().certs_dir).jwt_signing_key
    if not path.is_file():
        origin = f" (from ${DEV_KEY_VARIABLE})" if configured else ""
        raise FileNotFoundError(errno.ENOENT, f"no dev signing key at {path}{origin}; run `make run` once, "
                                              f"set {DEV_KEY_VARIABLE} or pass --key")
    return path


def _private_key(key_file: Path) -> RSAPrivateKey:
    """The RSA key in `key_file`; a ValueError naming the file when it holds anything else."""
    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{key_file}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"{key_file}: not an RSA private key (RS256 tokens need one)")
    return key


def parse_claim(text: str) -> tuple[str, object]:
    """`KEY=VALUE` from the command line; a comma makes a list of strings (`roles=reader,writer`), and a
    trailing comma makes a one-element list (`roles=reader,`) because role claims must stay lists."""
    key, value = _split(text)
    if "," not in value:
        return key, value
    return key, [item.strip() for item in value.split(",") if item.strip()]


def parse_json_claim(text: str) -> tuple[str, object]:
    """`KEY=JSON` from the command line, for numbers, booleans and nested objects."""
    key, value = _split(text)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"claim {key!r}: {value!r} is not JSON ({error.msg})") from None


def _split(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key, value
