"""CheckRequests the way Envoy sends them, and one real Check over gRPC."""

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from extauth.config.schema import ListenAddress
from extauth.policy.synthetic import check_request

__all__ = ["check", "check_request"]


def check(address: ListenAddress, token: str | None = None, path: str = "/api/orders",
          timeout: float = 5.0) -> CheckResponse:
    """One Check over a real gRPC channel to a running extauth."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with grpc.insecure_channel(address.grpc_target()) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request(path, headers=headers),
                                                                       timeout=timeout)
