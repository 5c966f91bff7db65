"""`serve --workers N`: a supervisor running N single-process servers, each on its own socket.

Envoy multiplexes every Check of one worker thread over one HTTP/2 connection per upstream host, so N
processes behind one SO_REUSEPORT address would not share load; each worker listens on its own address
(port+i, or `name-i.sock`) and the Envoy cluster lists them all. Crashed workers are restarted with
backoff; SIGTERM/SIGINT are forwarded and the supervisor exits once every worker has.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

log = structlog.get_logger("extauth.workers")

_POLL_SECONDS = 0.2
_MIN_RESTART_DELAY_SECONDS = 0.5
_MAX_RESTART_DELAY_SECONDS = 30.0
#: A worker that ran this long before dying is not crash-looping: restart it promptly.
_HEALTHY_UPTIME_SECONDS = 60.0


class Supervisor:
    def __init__(self, config_path: Path, workers: int, grace_period_seconds: float,
                 forwarded_args: Sequence[str] = ()) -> None:
        self._config_path = config_path
        self._forwarded_args = list(forwarded_args)
        self._workers = workers
        self._grace = grace_period_seconds
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._started_at: dict[int, float] = {}
        self._restart_delay = {index: _MIN_RESTART_DELAY_SECONDS for index in range(workers)}
        self._stopping = False

    def run(self) -> int:
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
        self._processes[index] = subprocess.Popen(command)
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
        return 0 if all(code == 0 for code in codes) else 1
