"""The gRPC face of the pipeline: Envoy's `envoy.service.auth.v3.Authorization/Check`. Deliberately thin."""

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauth.pipeline import Pipeline


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self._check = pipeline.check

    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext) -> CheckResponse:  # noqa: N802
        return await self._check(request)
