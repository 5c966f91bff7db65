"""Operational logs (not the audit stream): structlog JSON lines, on the standard stream the audit stream does not
own — stderr, or stdout when `audit.output: stderr` — so a log shipper (or `extauth audit verify`) reading the
audit stream never meets a log line in it (docs/audit.md#in-a-container)."""

import logging
import sys
from pathlib import Path
from typing import Protocol, TextIO

import structlog


class LineStream(Protocol):
    """Where log lines go: each `write` gets one whole line, newline included."""

    def write(self, text: str) -> object: ...

    def flush(self) -> None: ...


def stream_apart_from(audit_output: str | Path) -> TextIO:
    """The standard stream the audit stream (`audit.output`) leaves free: stderr unless the audit takes it."""
    return sys.stdout if audit_output == "stderr" else sys.stderr


def configure(level: str = "info", stream: LineStream | None = None) -> None:
    """JSON lines to `stream` (default stderr), each written with one `write`."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
