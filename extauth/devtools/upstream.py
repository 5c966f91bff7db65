"""The demo upstream: an HTTPS echo server, so tests can prove exactly what reached the upstream behind Envoy
(which identity headers were added, which client-supplied ones were stripped)."""

import json
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

SERVICE_NAME = "demo-upstream"


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every method with 200 and a JSON description of the request it received."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy pools upstream connections
    server_version = SERVICE_NAME

    def echo(self) -> None:
        self._discard_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = json.dumps(
            {"service": SERVICE_NAME, "method": self.command, "path": self.path, "headers": headers}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str) -> Callable[[], None]:
        """http.server dispatches to `do_<METHOD>`: every method, even an unusual one, gets the echo."""
        if name.startswith("do_"):
            return self.echo
        raise AttributeError(name)

    def _discard_body(self) -> None:
        """Read the body even though it is not echoed, or its bytes would be parsed as the next request."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
        else:
            self.rfile.read(int(self.headers.get("content-length") or 0))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _log({"service": SERVICE_NAME, "method": self.command, "path": self.path, "status": int(code)})

    def log_message(self, format: str, *args: object) -> None:
        _log({"service": SERVICE_NAME, "message": format % args})


class EchoServer(ThreadingHTTPServer):
    """The TLS handshake is deferred to the connection's own thread, so a slow or broken client cannot
    stall the accept loop."""

    def __init__(self, host: str, port: int, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        with _naming(f"{cert} / {key}"):  # ssl's errors do not say which file
            context.load_cert_chain(cert, key)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with _naming(f"{host}:{port}"):
            super().__init__((host, port), EchoHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """One log line instead of a traceback: failed handshakes and reset connections are routine."""
        _log({"service": SERVICE_NAME, "client": client_address[0], "error": repr(sys.exc_info()[1])})


class RunningUpstream:
    """A demo upstream serving from a background thread; also a context manager that stops it."""

    def __init__(self, server: EchoServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=SERVICE_NAME, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(cert: Path, key: Path, *, host: str = "127.0.0.1", port: int = 0) -> RunningUpstream:
    """Port 0 picks a free port (read it from `.port`), so parallel tests never collide."""
    return RunningUpstream(EchoServer(host, port, cert, key))


def serve(host: str, port: int, cert: Path, key: Path) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and return, so the process exits 0."""
    upstream = start_in_thread(cert, key, host=host, port=port)  # first: a failed start changes no signal handler
    stop_requested = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    _log({"service": SERVICE_NAME, "message": f"listening on https://{host}:{upstream.port}"})
    stop_requested.wait()
    upstream.stop()


@contextmanager
def _naming(what: str) -> Iterator[None]:
    """Re-raise an OSError that names nothing with `what` as its filename, so the CLI's one-line error says
    which files or address failed."""
    try:
        yield
    except OSError as error:
        if error.filename:
            raise
        raise OSError(error.errno, error.strerror or str(error), what) from error


def _log(event: dict[str, object]) -> None:
    print(json.dumps(event), file=sys.stderr, flush=True)
