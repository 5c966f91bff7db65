"""Where audit events go: a JSON-lines stream via structlog, or memory for tests."""

import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

import structlog


class AuditSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per line, timestamped in UTC; flushed per event so a crash loses nothing written."""

    def __init__(self, stream: TextIO, owns_stream: bool) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        # Its own non-filtering wrapper: the audit trail must not obey the operational log level.
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            wrapper_class=structlog.BoundLogger,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                structlog.processors.JSONRenderer(separators=(",", ":")),
            ],
        )

    @classmethod
    def open(cls, output: str | Path) -> "JsonLinesSink":
        if output == "stdout":
            return cls(sys.stdout, owns_stream=False)
        if output == "stderr":
            return cls(sys.stderr, owns_stream=False)
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8", buffering=1), owns_stream=True)

    def emit(self, event: dict[str, Any]) -> None:
        self._logger.msg(**event)

    def close(self) -> None:
        self._stream.flush()
        if self._owns_stream:
            self._stream.close()


class MemorySink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass
