"""The access-log servicer turns each HTTP entry Envoy streams into one `completion` audit event."""

from envoy.config.core.v3 import address_pb2
from envoy.config.core.v3.base_pb2 import RequestMethod
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import wrappers_pb2

from extauth.accesslog import AccessLogServicer
from extauth.audit.redact import Redactor
from extauth.audit.sink import MemorySink


def _http_logs(*entries: accesslog_pb2.HTTPAccessLogEntry) -> als_pb2.StreamAccessLogsMessage:
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=list(entries)))


def _entry(request_id: str, path: str = "/orders/7?page=2") -> accesslog_pb2.HTTPAccessLogEntry:
    upstream = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="10.0.0.5", port_value=8443))
    return accesslog_pb2.HTTPAccessLogEntry(
        common_properties=accesslog_pb2.AccessLogCommon(upstream_cluster="orders", upstream_remote_address=upstream),
        request=accesslog_pb2.HTTPRequestProperties(request_id=request_id, path=path, authority="api.example",
                                                     request_method=RequestMethod.Value("GET")),
        response=accesslog_pb2.HTTPResponseProperties(response_code=wrappers_pb2.UInt32Value(value=503),
                                                       response_body_bytes=42))


def test_each_http_entry_of_a_batch_becomes_one_completion_event() -> None:
    """Two entries in one message are two events, each joined to its decision by `request_id`."""
    sink = MemorySink()
    servicer = AccessLogServicer(sink, instance="extauth-1")
    servicer.record(_http_logs(_entry("r-1"), _entry("r-2")))
    assert [(event["event"], event["request_id"]) for event in sink.events] == [("completion", "r-1"),
                                                                               ("completion", "r-2")]
    first = sink.events[0]
    assert (first["status"], first["method"], first["host"], first["path"], first["bytes_sent"]) == (
        503, "GET", "api.example", "/orders/7", 42)
    assert (first["upstream_cluster"], first["upstream_host"], first["instance"]) == (
        "orders", "10.0.0.5:8443", "extauth-1")
    assert servicer.stats.entries == 2


def test_the_query_string_is_left_out_unless_the_redactor_audits_queries() -> None:
    """Envoy logs the path with its query; the event carries the query only when `audit.include_query` says so."""
    quiet, verbose = MemorySink(), MemorySink()
    AccessLogServicer(quiet, "i").record(_http_logs(_entry("r")))
    AccessLogServicer(verbose, "i", Redactor(include_query=True)).record(_http_logs(_entry("r")))
    assert "query" not in quiet.events[0]
    assert verbose.events[0]["query"] == "page=2"


def test_tcp_entries_are_counted_and_never_audited() -> None:
    """A TCP access-log batch (no HTTP request to join) adds no event, only a counter."""
    sink = MemorySink()
    servicer = AccessLogServicer(sink, "i")
    servicer.record(als_pb2.StreamAccessLogsMessage(tcp_logs=als_pb2.StreamAccessLogsMessage.TCPAccessLogEntries(
        log_entry=[accesslog_pb2.TCPAccessLogEntry(), accesslog_pb2.TCPAccessLogEntry()])))
    assert (sink.events, servicer.stats.tcp_entries_ignored, servicer.stats.entries) == ([], 2, 0)
