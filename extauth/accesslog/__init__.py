"""Envoy's gRPC Access Log Service (`envoy.service.accesslog.v3`): completion events for the audit stream.

Envoy's `envoy.access_loggers.http_grpc` logger (envoy/envoy.yaml) streams one `HTTPAccessLogEntry` per request
to extauth's own sockets; each becomes a `completion` event (status, bytes, upstream, durations) in the same
audit stream as the decisions, joined to its decision by `request_id`.

Only connections the CallerGate admits may send entries (unix sockets, or TLS clients listed in
`server.tls.access_log_clients`; see extauth/callers.py): any other stream ends at once with PERMISSION_DENIED,
before a single entry is read, and is counted.

The streams never end on Envoy's side, so on shutdown `close_streams()` ends them (after the server stopped
accepting new Checks and a short drain for the entries Envoy is still flushing), and the server's grace
period is not spent waiting on them.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from extauth.audit.events import completion_event
from extauth.audit.redact import Redactor
from extauth.audit.sink import AuditSink
from extauth.callers import CallerGate

log = structlog.get_logger("extauth.accesslog")

CALLER_REFUSED = "this connection may not send access logs"
SERVICE_NAME = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name


@dataclass
class AccessLogStats:
    streams_opened: int = 0
    streams_open: int = 0
    entries: int = 0
    tcp_entries_ignored: int = 0


class AccessLogServicer(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, audit: AuditSink, instance: str, redactor: Redactor | None = None,
                 callers: CallerGate | None = None) -> None:
        self._audit = audit
        self._callers = callers or CallerGate(None)
        self._instance = instance
        self._redactor = redactor or Redactor()
        self._closing = asyncio.Event()
        self.stats = AccessLogStats()

    async def StreamAccessLogs(self, request_iterator: Any,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> als_pb2.StreamAccessLogsResponse:
        if not self._callers.admits_access_logs(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CALLER_REFUSED)
        self.stats.streams_opened += 1
        self.stats.streams_open += 1
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                read = asyncio.ensure_future(context.read())
                done, _ = await asyncio.wait((read, closing), return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    break
                message = read.result()
                if message is grpc.aio.EOF:
                    break
                self.record(message)
        finally:
            closing.cancel()
            self.stats.streams_open -= 1
        return als_pb2.StreamAccessLogsResponse()

    def record(self, message: als_pb2.StreamAccessLogsMessage) -> None:
        """One message carries a batch of entries; each HTTP entry becomes one completion event."""
        if message.HasField("tcp_logs"):
            self.stats.tcp_entries_ignored += len(message.tcp_logs.log_entry)
            return
        for entry in message.http_logs.log_entry:
            self.stats.entries += 1
            self._audit.emit(completion_event(entry, self._instance, self._redactor))

    def close_streams(self) -> None:
        self._closing.set()
