"""Live readers of the audit stream (the admin API's TailAudit): each gets the lines the writer writes, as written.

The writer hands every rendered line to the subscribers in its own task, after rendering, so the Check path does
exactly what it does with nobody tailing (`AuditWriter.emit` does not look at subscribers at all). Each subscriber
has a bounded queue: one that reads too slowly loses lines, never slows the writer, and is told how many it lost
with the next line it gets.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]

#: Lines a subscriber may have waiting; past it, new lines are dropped for that subscriber only.
TAIL_QUEUE_LINES = 1000
#: Subscribers one process serves at once; more are refused (each costs the writer a filter call per line).
MAX_SUBSCRIBERS = 16


class TailSubscriber:
    def __init__(self, accepts: Callable[[Event], bool], capacity: int = TAIL_QUEUE_LINES) -> None:
        self._accepts = accepts
        self._capacity = capacity
        #: (line, lines dropped just before it)
        self._lines: deque[tuple[str, int]] = deque()
        self._dropped = 0
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, event: Event, line: str) -> None:
        """Called by the writer for every line; never blocks."""
        if self._closed or not self._accepts(event):
            return
        if len(self._lines) >= self._capacity:
            self._dropped += 1
            return
        self._lines.append((line, self._dropped))
        self._dropped = 0
        self._ready.set()

    def close(self) -> None:
        """The writer closed: the subscriber gets what is queued, then the end of the stream."""
        self._closed = True
        self._ready.set()

    async def next(self) -> tuple[str, int] | None:
        """The next line and how many were dropped before it; None once the writer closed and all were read."""
        while not self._lines:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._lines.popleft()


class TooManySubscribersError(Exception):
    """MAX_SUBSCRIBERS are tailing already."""


class Subscribers:
    """The writer's set of subscribers; empty, it costs the writer one truth test per line."""

    def __init__(self, limit: int = MAX_SUBSCRIBERS) -> None:
        self._limit = limit
        self._subscribers: list[TailSubscriber] = []

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, accepts: Callable[[Event], bool], capacity: int = TAIL_QUEUE_LINES) -> TailSubscriber:
        if len(self._subscribers) >= self._limit:
            raise TooManySubscribersError(f"{self._limit} audit tails are open already")
        subscriber = TailSubscriber(accepts, capacity)
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: TailSubscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def publish(self, event: Event, line: str) -> None:
        for subscriber in self._subscribers:
            subscriber.offer(event, line)

    def close(self) -> None:
        for subscriber in self._subscribers:
            subscriber.close()
