"""The audit writer: the Check path only enqueues; a background task renders, chains and writes in batches.

`emit` (Check path, a few hundred nanoseconds) offers the event to the bounded queue, whose sampling and
overflow policy live in queue.py (docs/audit.md#overflow).

The writer task takes what is queued (in arrival order), redacts, stamps and renders it (JSON), chains each
line to the previous one (`chain.py`, so chain order is file order) and writes the batch with one `write` in a
dedicated thread, so a slow disk or a full stdout pipe stalls only the writer, never a Check. `close()` writes
every queued event and an `audit_closed` record.

With a signing key (`audit.signing_key`) the writer also signs an `audit_checkpoint` line after
`audit_started`, then after every `checkpoint_every_events` lines or once `checkpoint_every_seconds` passed
since the oldest unsigned line, and signs `audit_closed` (signing.py). Signing is per checkpoint, in the
writer task, never on the Check path.
"""

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from extauth.audit.chain import CLOSED_EVENT, HashChain
from extauth.audit.events import SCHEMA_VERSION
from extauth.audit.queue import AuditQueue, AuditStats, Event, Offer
from extauth.audit.redact import Redactor
from extauth.audit.signing import CHECKPOINT_EVENT, CheckpointSigner
from extauth.audit.tail import Subscribers
from extauth.config.schema import AuditConfig

log = structlog.get_logger("extauth.audit")

#: After the writer wakes up it waits this long, so a busy loop's events go out in one write, not one each.
#: Each write is a hand-off to the writer thread (futex wake, context switch, loop wake-up): through Envoy at
#: ~2k Checks/s, 50 ms instead of 2 ms cut extauth's CPU per Check by ~15% (bench/README.md). Events reach
#: the file at most ~50 ms late; a graceful stop still flushes everything.
LINGER_SECONDS = 0.05
MAX_BATCH = 1024
CLOSE_TIMEOUT_SECONDS = 30.0
_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)
_DENY_DROP_LOG_INTERVAL = 1.0


class Output(Protocol):
    """Where rendered lines go; `write` runs in the writer's thread and may block."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class FdOutput:
    """A file descriptor written with `os.write` until every byte is out (files opened O_APPEND)."""

    def __init__(self, fd: int, owns: bool, name: str) -> None:
        self.fd = fd
        self.owns = owns
        self.name = name

    @classmethod
    def open(cls, output: str | Path) -> "FdOutput":
        if output in ("stdout", "stderr"):
            stream = sys.stdout if output == "stdout" else sys.stderr
            stream.flush()
            return cls(stream.fileno(), owns=False, name=str(output))
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640), owns=True, name=str(path))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.owns:
            os.close(self.fd)


#: What orjson refuses (lone surrogates, integers beyond 64 bits, non-string keys, deep nesting) or would write as
#: non-ASCII goes through json, which escapes it; anything neither can hold is written as its repr.
_FALLBACK_JSON = json.JSONEncoder(separators=(",", ":"), default=repr).encode


def render_json(event: Event) -> str:
    """One compact JSON object, ASCII only. orjson renders an audit event ~10x faster than json (bench/README.md,
    round 2); a line it would write with non-ASCII characters is rendered by json instead, escaped as before, so no
    reader can split a line at U+0085 or U+2028 (as `str.splitlines` does)."""
    try:
        rendered = orjson.dumps(event, default=repr)
    except orjson.JSONEncodeError:
        return _FALLBACK_JSON(event)
    return rendered.decode() if rendered.isascii() else _FALLBACK_JSON(event)


def utc_timestamp() -> Callable[[float], str]:
    """`1764000000.25` → `2025-11-24T16:00:00.250000Z`, formatting the seconds part once per second."""
    cached_second, cached_prefix = -1, ""

    def render(ts: float) -> str:
        nonlocal cached_second, cached_prefix
        second = int(ts)
        if second != cached_second:
            cached_second, cached_prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{cached_prefix}.{int((ts - second) * 1e6):06d}Z"
    return render


class AuditWriter:
    def __init__(self, output: Output, *, instance: str, queue_size: int = 10_000, deny_overflow: int = 10_000,
                 allow_sample_rate: float = 1.0, redactor: Redactor | None = None,
                 linger_seconds: float = LINGER_SECONDS, signer: CheckpointSigner | None = None) -> None:
        self.output = output
        self.instance = instance
        self.allow_sample_rate = allow_sample_rate
        self.redactor = redactor or Redactor()
        self.stats = AuditStats()
        self.queue = AuditQueue(queue_size, deny_overflow, allow_sample_rate, self.stats)
        self.chain = HashChain(f"{instance}/{uuid.uuid4().hex[:12]}")
        #: Live readers (admin TailAudit): handed each line as it is written, never by the Check path.
        self.subscribers = Subscribers()
        self._timestamp = utc_timestamp()
        self._linger = linger_seconds
        self._signer = signer
        # Lines written since the last checkpoint, and when the oldest of them was rendered (monotonic).
        self._unsigned_lines = 0
        self._unsigned_since = 0.0
        self._last_deny_drop_log = -1e9
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")

    @classmethod
    def open(cls, output: str | Path, instance: str, **options: Any) -> "AuditWriter":
        return cls(FdOutput.open(output), instance=instance, **options)

    @classmethod
    def from_config(cls, audit: AuditConfig, instance: str, redactor: Redactor) -> "AuditWriter":
        signer = CheckpointSigner.from_config(audit)
        return cls.open(audit.output, instance, queue_size=audit.queue_size, deny_overflow=audit.deny_overflow,
                        allow_sample_rate=audit.allow_sample_rate, redactor=redactor, signer=signer)

    @property
    def depth(self) -> int:
        return self.queue.depth

    # -- the Check path ---------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue one event without blocking; sampling and the overflow policy apply (queue.py)."""
        offered = self.queue.offer(event)
        if offered is Offer.QUEUED:
            self._wakeup.set()
        elif offered is Offer.DENY_DROPPED:
            self._log_deny_drop()

    def _log_deny_drop(self) -> None:
        now = time.monotonic()
        if now - self._last_deny_drop_log >= _DENY_DROP_LOG_INTERVAL:
            self._last_deny_drop_log = now
            log.error("audit_deny_dropped", dropped_denies=self.stats.dropped["deny"], queue_depth=self.depth,
                      hint="the audit sink is not keeping up; denials are being lost")

    # -- the writer task --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._emit_internal({"event": "audit_started", "queue_size": self.queue.queue_size,
                             "deny_overflow": self.queue.deny_overflow, "allow_sample_rate": self.allow_sample_rate})

    async def close(self) -> None:
        """Write everything queued, then the `audit_closed` record; give up after CLOSE_TIMEOUT_SECONDS."""
        if self._task is None:
            self.queue.closed = True
            self._executor.shutdown(wait=False)
            return
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.error("audit_flush_timed_out", unwritten=self.depth, seconds=CLOSE_TIMEOUT_SECONDS)
            self._task.cancel()
        finally:
            self.queue.closed = True
            self.subscribers.close()
            await asyncio.get_running_loop().run_in_executor(self._executor, self.output.close)
            self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        while True:
            if not self.depth and not self.queue.has_unreported_drops:
                if self._closing:
                    break
                self._wakeup.clear()
                if not await self._wait_or_checkpoint():
                    continue
                if self._linger and not self._closing:
                    await asyncio.sleep(self._linger)
                continue
            await self._write(self._render_batch())
        closed = {"event": CLOSED_EVENT, "events": self.chain.seq, "dropped": dict(self.stats.dropped),
                  "sampled_out": self.stats.sampled_out}
        if self._signer is not None:
            closed["key_id"] = self._signer.key_id
        await self._write(self._render(self._internal(closed), signed=self._signer is not None).encode())

    async def _wait_or_checkpoint(self) -> bool:
        """Wait for events; False if a checkpoint fell due first (and was written) while the writer was idle."""
        if self._signer is None or not self._unsigned_lines:
            await self._wakeup.wait()
            return True
        remaining = self._unsigned_since + self._signer.every_seconds - time.monotonic()
        try:
            await asyncio.wait_for(self._wakeup.wait(), max(remaining, 0))
            return True
        except TimeoutError:
            await self._write(self._render_checkpoint().encode())
            return False

    def record(self, event: str, **fields: Any) -> None:
        """An operational event (extauth.notify.Notify): queued with the denies, never dropped or sampled."""
        self._emit_internal({"event": event, **fields})

    def _emit_internal(self, record: Event) -> None:
        self.queue.offer_protected(self._internal(record))
        self._wakeup.set()

    def _internal(self, record: Event) -> Event:
        return {"schema_version": SCHEMA_VERSION, **record, "ts": time.time(), "instance": self.instance}

    def _render_batch(self) -> bytes:
        parts = []
        if self.queue.has_unreported_drops:
            drops = self.queue.take_unreported_drops()
            parts.append(self._render(self._internal({"event": "audit_dropped", "dropped": drops,
                                                       "dropped_total": dict(self.stats.dropped)})))
        written = self.stats.written
        signer = self._signer
        for event in self.queue.take(MAX_BATCH):
            kind = event["event"]
            written[kind] = written.get(kind, 0) + 1
            parts.append(self._render(event))
            if signer is not None and self._unsigned_lines >= signer.every_events:
                parts.append(self._render_checkpoint())
        if signer is not None and self._unsigned_lines and (
                not self.stats.checkpoints or time.monotonic() - self._unsigned_since >= signer.every_seconds):
            parts.append(self._render_checkpoint())
        self.stats.batches += 1
        return "".join(parts).encode()

    def _render_checkpoint(self) -> str:
        assert self._signer is not None
        self.stats.checkpoints += 1
        return self._render(self._internal({"event": CHECKPOINT_EVENT, "key_id": self._signer.key_id}), signed=True)

    def _render(self, event: Event, signed: bool = False) -> str:
        self.chain.stamp(event)
        self.redactor.scrub(event)
        ts = event.get("ts")
        event["ts"] = self._timestamp(ts if isinstance(ts, int | float) else time.time())
        rendered = render_json(event)
        if signed:
            assert self._signer is not None
            rendered = self._signer.sign(rendered)
            self._unsigned_lines = 0
        else:
            if not self._unsigned_lines:
                self._unsigned_since = time.monotonic()
            self._unsigned_lines += 1
        line = self.chain.seal(rendered)
        if self.subscribers:
            self.subscribers.publish(event, line)
        return line

    async def _write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(len(_RETRY_SECONDS) + 1):
            try:
                await loop.run_in_executor(self._executor, self.output.write, data)
                return
            except OSError as error:
                self.stats.write_errors += 1
                log.error("audit_write_failed", error=str(error), output=getattr(self.output, "name", "?"),
                          attempt=attempt + 1, queue_depth=self.depth)
                if attempt == len(_RETRY_SECONDS):
                    break
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(_RETRY_SECONDS[attempt])
        # The lines are lost (`audit verify` will show the gap in seq); count them and report them in the stream.
        self.queue.drop("write_failed", data.count(b"\n"))
