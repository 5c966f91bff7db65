"""Kubernetes service-account tokens (`preset: kubernetes`): the namespace and service account a projected token
names, as `namespace/name` (`billing/invoicer`), for `service_accounts:` conditions.

A projected token (the TokenRequest API, a `serviceAccountToken` volume) is a JWT the API server signs:
`sub: system:serviceaccount:<namespace>:<name>`, an audience the pod asked for, `exp`, and a `kubernetes.io`
object with `namespace`, `serviceaccount.name` and, for a pod's token, `pod.name`. The service account is read
only from a token of a `preset: kubernetes` provider, so another issuer's `kubernetes.io` claim names nobody.

Legacy secret-based tokens (`iss: kubernetes/serviceaccount`, flat `kubernetes.io/serviceaccount/...` claims, no
`exp`, no `aud`) are refused: they never expire and are meant for every audience. Their issuer is not the
cluster's, and the preset requires `exp`, `aud` and the `kubernetes.io` object besides.
"""

import re
from collections.abc import Mapping
from typing import Any

from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason

#: A namespace is an RFC 1123 label; a service account name an RFC 1123 subdomain: neither can hold `/` or `:`,
#: so `namespace/name` and the `sub` each have one reading.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253


def _invalid(description: str) -> AuthenticationError:
    return AuthenticationError(Reason.INVALID_SERVICE_ACCOUNT, description)


def service_account_of(claims: Mapping[str, Any]) -> str:
    """`namespace/name` of the service account a verified projected token names; AuthenticationError when its
    `kubernetes.io` claim names none, names an invalid one, or disagrees with the token's `sub`."""
    info = claims.get("kubernetes.io")
    if not isinstance(info, Mapping):
        raise _invalid("token has no 'kubernetes.io' object")
    namespace = info.get("namespace")
    account = info.get("serviceaccount")
    name = account.get("name") if isinstance(account, Mapping) else None
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise _invalid("token names no valid namespace")
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise _invalid("token names no valid service account")
    if claims.get("sub") != f"system:serviceaccount:{namespace}:{name}":
        raise _invalid("token subject is not the service account its 'kubernetes.io' claim names")
    return f"{namespace}/{name}"
