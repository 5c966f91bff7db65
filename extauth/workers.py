"""`serve --workers N`: a supervisor running N single-process servers, each on its own socket.

Envoy multiplexes every Check of one worker thread over one HTTP/2 connection per upstream host, so N
processes behind one SO_REUSEPORT address would not share load; each worker listens on its own address
(port+i, or `name-i.sock`) and the Envoy cluster lists them all. Crashed workers are restarted with
backoff; SIGTERM/SIGINT are forwarded and the supervisor exits once every worker has.

Workers never write to the supervisor's stdout or stderr themselves: a write to a pipe is atomic only up to
PIPE_BUF (4096 bytes), so two workers' audit batches on one stdout pipe (a container's log capture) came out
spliced mid-line, and the audit chains broke. Each worker writes into pipes of its own, and `LineRelay` copies
them to the supervisor's streams in whole lines (docs/audit.md#in-a-container).
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import structlog

from extauth import logs

log = structlog.get_logger("extauth.workers")

_POLL_SECONDS = 0.2
_MIN_RESTART_DELAY_SECONDS = 0.5
_MAX_RESTART_DELAY_SECONDS = 30.0
#: A worker that ran this long before dying is not crash-looping: restart it promptly.
_HEALTHY_UPTIME_SECONDS = 60.0
_RELAY_READ_BYTES = 65536
#: After the workers exit, how long the relay may take to pass on what they wrote last.
_RELAY_DRAIN_SECONDS = 10.0


class LineRelay:
    """Copies many sources (workers' stdout and stderr pipes) to the supervisor's file descriptors, whole lines at a
    time: a thread per source reads what arrives and writes the complete lines in it under one lock, holding a
    line back until its newline comes, however long it is. A source that ends mid-line (a killed worker) has the
    fragment ended with a newline, so the next line written stays whole. A destination that fails (a closed
    pipe) stops its sources' threads, which close the sources: the workers see the failed write themselves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, source: IO[bytes], destination_fd: int) -> None:
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        thread = threading.Thread(target=self._copy, args=(source, destination_fd), daemon=True,
                                  name=f"relay-{source.fileno()}-to-{destination_fd}")
        self._threads.append(thread)
        thread.start()

    def write(self, destination_fd: int, data: bytes) -> None:
        """Every byte of `data`, with no other write to any destination in between."""
        view = memoryview(data)
        with self._lock:
            while view:
                view = view[os.write(destination_fd, view):]

    def stream(self, destination_fd: int) -> logs.LineStream:
        """The supervisor's own log lines, written under the same lock as the relayed ones."""
        return _RelayedStream(self, destination_fd)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _copy(self, source: IO[bytes], destination_fd: int) -> None:
        pending = bytearray()
        try:
            while chunk := os.read(source.fileno(), _RELAY_READ_BYTES):
                end = chunk.rfind(b"\n") + 1
                if not end:
                    pending += chunk
                    continue
                self.write(destination_fd, bytes(pending + chunk[:end]) if pending else chunk[:end])
                pending = bytearray(chunk[end:])
            if pending:
                self.write(destination_fd, bytes(pending + b"\n"))
        except OSError as error:
            with contextlib.suppress(OSError):  # the failed destination may be the log's own
                log.error("worker_output_lost", destination_fd=destination_fd, error=str(error))
        finally:
            source.close()


class _RelayedStream:
    """A `logs.LineStream` onto one of the relay's destinations."""

    def __init__(self, relay: LineRelay, destination_fd: int) -> None:
        self._relay = relay
        self._fd = destination_fd

    def write(self, text: str) -> None:
        self._relay.write(self._fd, text.encode())

    def flush(self) -> None:
        pass


class Supervisor:
    def __init__(self, config_path: Path, workers: int, grace_period_seconds: float,
                 forwarded_args: Sequence[str] = (), log_level: str = "info",
                 audit_output: str | Path = "stdout") -> None:
        self._config_path = config_path
        self._relay = LineRelay()
        self._log_level = log_level
        self._log_fd = logs.stream_apart_from(audit_output).fileno()
        self._forwarded_args = list(forwarded_args)
        self._workers = workers
        self._grace = grace_period_seconds
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._started_at: dict[int, float] = {}
        self._restart_delay = {index: _MIN_RESTART_DELAY_SECONDS for index in range(workers)}
        self._stopping = False

    def run(self) -> int:
        logs.configure(self._log_level, self._relay.stream(self._log_fd))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        signal.signal(signal.SIGHUP, self._forward_reload)
        for index in range(self._workers):
            self._start(index)
        while not self._stopping:
            for index, process in list(self._processes.items()):
                if process.poll() is not None and not self._stopping:
                    if time.monotonic() - self._started_at[index] > _HEALTHY_UPTIME_SECONDS:
                        self._restart_delay[index] = _MIN_RESTART_DELAY_SECONDS
                    log.error("worker_exited", worker=index, pid=process.pid, code=process.returncode,
                              restart_in_seconds=self._restart_delay[index])
                    time.sleep(self._restart_delay[index])
                    self._restart_delay[index] = min(self._restart_delay[index] * 2, _MAX_RESTART_DELAY_SECONDS)
                    if not self._stopping:
                        self._start(index)
            time.sleep(_POLL_SECONDS)
        return self._stop_all()

    def _request_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _forward_reload(self, signum: int, frame: object) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGHUP)

    def _start(self, index: int) -> None:
        command = [sys.executable, "-m", "extauth", "serve", "--config", str(self._config_path),
                   "--workers", str(self._workers), "--worker-index", str(index), *self._forwarded_args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        self._relay.start(process.stdout, sys.stdout.fileno())
        self._relay.start(process.stderr, sys.stderr.fileno())
        self._processes[index] = process
        self._started_at[index] = time.monotonic()
        log.info("worker_started", worker=index, pid=self._processes[index].pid)

    def _stop_all(self) -> int:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 5
        codes = []
        for index, process in self._processes.items():
            try:
                codes.append(process.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.error("worker_killed", worker=index, pid=process.pid)
                process.kill()
                codes.append(process.wait())
        self._relay.join(_RELAY_DRAIN_SECONDS)
        return 0 if all(code == 0 for code in codes) else 1
