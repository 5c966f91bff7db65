"""The gRPC face of the pipeline: Envoy's `envoy.service.auth.v3.Authorization/Check`. Deliberately thin."""

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauth.callers import CallerGate
from extauth.pipeline import Pipeline

#: Says no more than necessary: a refused caller learns nothing about the allowlist.
CALLER_REFUSED = "this client certificate may not call Check"


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, pipeline: Pipeline, callers: CallerGate | None = None) -> None:
        self._check = pipeline.check
        self._traced = pipeline.traced
        self._callers = callers if callers is not None and callers.checks_every_call else None

    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext) -> CheckResponse:  # noqa: N802
        if self._callers is not None and not self._callers.admits_check(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CALLER_REFUSED)
        if self._traced:  # the caller's span (Envoy's ext_authz call) arrives as gRPC metadata
            return await self._check(request, dict(context.invocation_metadata() or ()))
        return await self._check(request)
