"""What the Check path hands audit events to: the `AuditWriter` (writer.py) in production, memory in tests."""

from typing import Any, Protocol


class AuditSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...


class MemorySink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass
