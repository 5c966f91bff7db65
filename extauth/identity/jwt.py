"""JWT verification for one provider: algorithm allow-list, key selection, signature, claims, then a Principal.

pyjwt checks signature, audience, issuer and required claims; the time claims are checked here against
the injected clock. Every failure becomes a specific reason with a description that quotes nothing
from the token.
"""

import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options
from jwt.utils import base64url_decode

from extauth.clock import Clock
from extauth.config.schema import DEFAULT_MAX_HEADER_VALUE_BYTES, JwtProviderConfig
from extauth.identity.claims import find_claim, groups_in, roles_in
from extauth.identity.identities import Identities
from extauth.identity.jwks import KeyStore
from extauth.identity.keys import VerificationKey
from extauth.identity.kubernetes import service_account_of
from extauth.identity.principal import AuthenticationError, KeysUnavailableError, Principal
from extauth.reasons import Reason


def _malformed(description: str) -> AuthenticationError:
    return AuthenticationError(Reason.MALFORMED_TOKEN, description)


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """What a token says about itself before its signature is checked: enough to pick the provider and key."""

    raw: str
    algorithm: str
    key_id: str | None
    issuer: str | None

    @classmethod
    def parse(cls, token: str) -> "UnverifiedToken":
        parts = token.split(".")
        if len(parts) != 3:
            raise _malformed("token is not a JWS compact serialization")
        header, claims = _json_segment(parts[0], "header"), _json_segment(parts[1], "payload")
        algorithm, key_id, issuer = header.get("alg"), header.get("kid"), claims.get("iss")
        if not isinstance(algorithm, str):
            raise _malformed("token header has no 'alg'")
        if not isinstance(key_id, str | None):
            raise _malformed("token header 'kid' is not a string")
        return cls(token, algorithm, key_id, issuer if isinstance(issuer, str) else None)


def _json_segment(segment: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(base64url_decode(segment))
    except (ValueError, RecursionError):
        raise _malformed(f"token {name} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise _malformed(f"token {name} is not a JSON object")
    return value


class JwtVerifier:
    def __init__(self, provider: JwtProviderConfig, keys: KeyStore, clock: Clock,
                 identities: Identities | None = None) -> None:
        self.provider = provider.name
        self._config = provider
        self._keys = keys
        self._clock = clock
        self._algorithms = frozenset(alg for alg in provider.algorithms if alg.lower() != "none")
        self._audiences = list(provider.audiences)
        self._issuer = provider.issuer
        self._leeway = provider.leeway_seconds
        self._options: Options = {
            "require": list(provider.required_claims),
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        self._roles_claim = provider.roles_claim
        self._groups_claim = provider.groups_claim
        self._identities = identities or Identities([provider], DEFAULT_MAX_HEADER_VALUE_BYTES)

    async def verify(self, token: UnverifiedToken) -> Principal:
        if token.algorithm not in self._algorithms:
            raise AuthenticationError(
                Reason.DISALLOWED_ALGORITHM, f"algorithm {token.algorithm!r} is not accepted for this issuer"
            )
        key = await self._key_for(token)
        claims = self._decode(token.raw, key, token.algorithm)
        expires_at = self._check_times(claims)
        subject = claims.get("sub", "")
        service_account = service_account_of(claims) if self._config.preset == "kubernetes" else None
        return Principal(
            subject=subject,
            identity=self._identities.of(self._config, subject),
            issuer=self._issuer,
            provider=self.provider,
            key_id=key.key_id,
            roles=roles_in(find_claim(claims, self._roles_claim)),
            groups=groups_in(find_claim(claims, self._groups_claim)),
            claims=types.MappingProxyType(claims),
            expires_at=expires_at,
            service_account=service_account,
        )

    async def _key_for(self, token: UnverifiedToken) -> VerificationKey:
        keys = self._keys.keys
        if keys is None:
            raise KeysUnavailableError(self.provider)
        key = keys.find(token.key_id, token.algorithm)
        if key is None and token.key_id is not None:
            keys = await self._keys.refetch_for_unknown_kid()
            key = keys.find(token.key_id, token.algorithm) if keys is not None else None
        if key is None:
            raise AuthenticationError(Reason.UNKNOWN_KEY, "no signing key of this issuer matches the token")
        if token.algorithm not in key.algorithms:
            raise AuthenticationError(
                Reason.DISALLOWED_ALGORITHM, f"algorithm {token.algorithm!r} does not match the signing key's type"
            )
        return key

    def _decode(self, raw: str, key: VerificationKey, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                raw,
                key.key,
                algorithms=[algorithm],
                audience=self._audiences,
                issuer=self._issuer,
                options=self._options,
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError(Reason.INVALID_SIGNATURE, "token signature is invalid") from None
        except jwt.exceptions.InvalidSubjectError:
            raise AuthenticationError(Reason.INVALID_SUBJECT, "token subject is not a string") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationError(Reason.MISSING_CLAIM, f"token lacks the {error.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(Reason.INVALID_AUDIENCE, "token is not meant for this audience") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(Reason.INVALID_ISSUER, "token issuer is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationError(Reason.DISALLOWED_ALGORITHM, "token algorithm is not accepted") from None
        except jwt.InvalidKeyError:
            raise AuthenticationError(Reason.INVALID_SIGNATURE, "signing key cannot verify this token") from None
        except jwt.InvalidTokenError:
            raise _malformed("token is malformed") from None

    def _check_times(self, claims: Mapping[str, Any]) -> float | None:
        return check_times(claims, self._clock.now(), self._leeway)


def check_times(claims: Mapping[str, Any], now: float, leeway: float) -> float | None:
    """Enforce exp/nbf/iat with leeway at `now` (JWT claims and introspection answers alike); returns `exp`."""
    expires_at = _timestamp(claims, "exp")
    if expires_at is not None and expires_at <= now - leeway:
        raise AuthenticationError(Reason.TOKEN_EXPIRED, "token has expired")
    not_before = _timestamp(claims, "nbf")
    if not_before is not None and not_before > now + leeway:
        raise AuthenticationError(Reason.TOKEN_NOT_YET_VALID, "token is not valid yet")
    issued_at = _timestamp(claims, "iat")
    if issued_at is not None and issued_at > now + leeway:
        raise AuthenticationError(Reason.TOKEN_ISSUED_IN_FUTURE, "token was issued in the future")
    return expires_at


def _timestamp(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim; NaN and infinities are refused since they would compare as never expiring."""
    value = claims.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _malformed(f"token {name!r} claim is not a number")
    except OverflowError:
        raise _malformed(f"token {name!r} claim is out of range") from None
    return float(value)
