"""CheckRequests the way Envoy sends them, and one real Check over gRPC."""

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauth.config.schema import ListenAddress
from extauth.tools.synthetic import check_request

__all__ = ["check", "check_request", "health_status"]


def check(address: ListenAddress, token: str | None = None, path: str = "/api/orders",
          timeout: float = 5.0) -> CheckResponse:
    """One Check over a real gRPC channel to a running extauth."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with grpc.insecure_channel(address.grpc_target()) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request(path, headers=headers),
                                                                       timeout=timeout)


def health_status(address: ListenAddress) -> int:
    """The overall gRPC health status a Kubernetes probe or Envoy health check would see."""
    with grpc.insecure_channel(address.grpc_target()) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
