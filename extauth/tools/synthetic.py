"""Requests and principals described by hand, for `extauth explain` and `extauth test`.

They are built exactly as Envoy and the authenticator would build them (a CheckRequest with lower-cased
header names; a Principal with roles from the roles claim), so a policy test exercises the real evaluator.
"""

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from extauth.identity.claims import groups_in
from extauth.identity.principal import Principal


def check_request(
    path: str = "/",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    host: str = "gateway.example",
    source: str = "192.0.2.10",
    context_extensions: Mapping[str, str] | None = None,
    request_id: str = "req-1",
    peer: str = "",
    peer_certificate: str = "",
) -> CheckRequest:
    check = CheckRequest()
    http = check.attributes.request.http
    http.id = "1"
    http.method = method
    http.path = path
    http.host = host
    http.scheme = "https"
    http.protocol = "HTTP/2"
    http.headers[":authority"] = host
    http.headers[":method"] = method
    http.headers[":path"] = path
    http.headers["x-request-id"] = request_id
    for name, value in (headers or {}).items():
        http.headers[name.lower()] = value
    check.attributes.source.address.socket_address.address = source
    check.attributes.source.address.socket_address.port_value = 40000
    check.attributes.source.principal = peer
    # As Envoy sends it with `include_peer_certificate`: the verified certificate's PEM, URL-encoded.
    check.attributes.source.certificate = peer_certificate
    for key, value in (context_extensions or {}).items():
        check.attributes.context_extensions[key] = value
    return check


def check_request_for_url(url: str, method: str = "GET", **details: Any) -> CheckRequest:
    """`https://host/path?query` or just `/path?query`."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.hostname:
        details.setdefault("host", parts.netloc)
    return check_request(path, method, **details)


def principal(subject: str, roles: Sequence[str] = (), claims: Mapping[str, Any] | None = None,
              issuer: str = "https://issuer.invalid", provider: str = "synthetic") -> Principal:
    all_claims = {"iss": issuer, "sub": subject, "roles": list(roles), **(claims or {})}
    return Principal(subject=subject, identity=subject, issuer=issuer, provider=provider, key_id=None,
                     roles=frozenset(roles), groups=groups_in(all_claims.get("groups")),
                     claims=MappingProxyType(all_claims), expires_at=None)
