"""`GET /metrics` in the Prometheus text format, served on the event loop (`server.metrics_listen`).

Served by the loop that owns the numbers, so a scrape reads them between two Checks and needs no locks. The
server is minimal on purpose: one request per connection, GET only, a bounded request head.
"""

import asyncio
import contextlib

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from extauth.config.schema import ListenAddress
from extauth.unixsocket import SocketIdentity, claim_socket_path, remove_own_socket, socket_identity

log = structlog.get_logger("extauth.metrics")

_MAX_HEAD_BYTES = 8192
_READ_TIMEOUT_SECONDS = 5.0


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, address: ListenAddress) -> None:
        self._registry = registry
        self.address = address
        self._server: asyncio.base_events.Server | None = None
        #: The unix socket this server created (its inode), the only file `stop` removes.
        self._socket_identity: SocketIdentity | None = None
        self.scrapes = 0

    async def start(self) -> None:
        if self.address.kind == "unix":
            assert self.address.path is not None
            claim_socket_path(self.address.path)
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.address.path))
            self._socket_identity = socket_identity(self.address.path)
        else:
            self._server = await asyncio.start_server(self._serve, self.address.host, self.address.port)
        log.info("metrics_listening", address=str(self.address))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._socket_identity is not None and self.address.path is not None:
            remove_own_socket(self.address.path, self._socket_identity)
            self._socket_identity = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_SECONDS)
            method, _, rest = head[:_MAX_HEAD_BYTES].partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                self._reply(writer, b"405 Method Not Allowed", b"text/plain", b"GET only\n")
            elif target in (b"/metrics", b"/"):
                self.scrapes += 1
                body = generate_latest(self._registry)
                self._reply(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), b"" if method == b"HEAD" else body)
            else:
                self._reply(writer, b"404 Not Found", b"text/plain", b"see /metrics\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, status: bytes, content_type: bytes, body: bytes) -> None:
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
