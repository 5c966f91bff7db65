"""Build CheckRequests the way Envoy sends them (lower-cased header names, path with query)."""

from collections.abc import Mapping

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauth.config.schema import ListenAddress


def check_request(
    path: str = "/",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    host: str = "gateway.example",
    source: str = "192.0.2.10",
    context_extensions: Mapping[str, str] | None = None,
    request_id: str = "req-1",
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
    http.headers["x-request-id"] = request_id
    for name, value in (headers or {}).items():
        http.headers[name.lower()] = value
    check.attributes.source.address.socket_address.address = source
    check.attributes.source.address.socket_address.port_value = 40000
    for key, value in (context_extensions or {}).items():
        check.attributes.context_extensions[key] = value
    return check


def check(address: ListenAddress, token: str | None = None, path: str = "/api/orders",
          timeout: float = 5.0) -> CheckResponse:
    """One Check over a real gRPC channel to a running extauth."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with grpc.insecure_channel(address.grpc_target()) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request(path, headers=headers),
                                                                       timeout=timeout)
