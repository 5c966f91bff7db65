"""The floor for "Python gRPC ext_authz": a servicer that answers OK to every Check without reading it.

Same stack as extauth (grpc.aio on uvloop, extauth's server options and concurrency cap), so the gap between
this and extauth through Envoy is the cost of extauth's own work. Health is served so the bench can wait for
it the way it waits for extauth, and Envoy's access-log stream is accepted and discarded, so Envoy does the
same work in front of both (no failing, retried stream here only).

    python bench/noop_authz.py /tmp/noop.sock
"""

import argparse
import asyncio
import signal
from pathlib import Path

import grpc
import uvloop
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc

from extauth.config.schema import ServerConfig
from extauth.server import GRPC_OPTIONS

_OK = CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: CheckRequest, context: grpc.aio.ServicerContext) -> CheckResponse:  # noqa: N802
        return _OK


class DiscardAccessLogs(als_pb2_grpc.AccessLogServiceServicer):
    async def StreamAccessLogs(self, request_iterator, context: grpc.aio.ServicerContext):  # noqa: N802
        async for _ in request_iterator:
            pass
        return als_pb2.StreamAccessLogsResponse()


async def serve(socket_path: Path) -> None:
    """Until SIGTERM or SIGINT, as `ManagedProcess.stop` sends."""
    server = grpc.aio.server(options=GRPC_OPTIONS, maximum_concurrent_rpcs=ServerConfig().max_concurrent_checks)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(DiscardAccessLogs(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    socket_path.unlink(missing_ok=True)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)
    socket_path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("socket", type=Path, help="unix socket path to listen on")
    uvloop.run(serve(parser.parse_args().socket))


if __name__ == "__main__":
    main()
