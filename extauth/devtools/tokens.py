"""Dev tokens signed with the dev key from `create_dev_certs`, for trying policies by hand and for tests."""

import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import jwt

from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_ID


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
    issued_at = int(time.time() if now is None else now)
    payload: dict[str, object] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(payload, key_file.read_bytes(), algorithm="RS256", headers={"kid": DEV_KEY_ID})


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
