"""The JSON-lines audit sink."""

import io
import json

from extauth import logs
from extauth.audit.sink import JsonLinesSink


def test_audit_events_are_written_whatever_the_operational_log_level() -> None:
    """`logging.level: error` quiets operational logs but never drops an audit event."""
    logs.configure("error")
    try:
        stream = io.StringIO()
        JsonLinesSink(stream, owns_stream=False).emit({"event": "decision", "request_id": "r1"})
        event = json.loads(stream.getvalue())
        assert (event["event"], event["request_id"]) == ("decision", "r1") and event["ts"].endswith("Z")
    finally:
        logs.configure("info")
