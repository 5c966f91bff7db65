"""The demo upstream echoes, over real TLS, exactly what it received."""

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.upstream import RunningUpstream, start_in_thread


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def upstream(certs: DevCerts) -> Iterator[RunningUpstream]:
    with start_in_thread(certs.upstream_cert, certs.upstream_key) as running:
        yield running


@pytest.fixture
def connection(certs: DevCerts, upstream: RunningUpstream) -> Iterator[http.client.HTTPSConnection]:
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", upstream.port, context=context, timeout=5)
    yield connection
    connection.close()


def _exchange(connection: http.client.HTTPSConnection, method: str, path: str, **kwargs: object) -> dict:
    connection.request(method, path, **kwargs)  # type: ignore[arg-type]
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    return json.loads(response.read())


def test_echoes_method_path_and_lowercased_headers(connection: http.client.HTTPSConnection) -> None:
    """A GET is answered 200 with the service name, method, path with query, and lower-cased headers."""
    echo = _exchange(connection, "GET", "/api/items?page=2", headers={"X-Extauth-Subject": "alice"})
    assert echo["service"] == "demo-upstream"
    assert (echo["method"], echo["path"]) == ("GET", "/api/items?page=2")
    assert echo["headers"]["x-extauth-subject"] == "alice"


def test_repeated_headers_are_joined(connection: http.client.HTTPSConnection) -> None:
    """A header sent twice appears once, with both values comma-joined."""
    connection.putrequest("GET", "/twice")
    connection.putheader("X-Roles", "reader")
    connection.putheader("X-Roles", "writer")
    connection.endheaders()
    response = connection.getresponse()
    assert json.loads(response.read())["headers"]["x-roles"] == "reader, writer"


def test_any_method_is_echoed(connection: http.client.HTTPSConnection) -> None:
    """Methods http.server has no handler for by default (PROPFIND) are echoed too, not answered 501."""
    assert _exchange(connection, "PROPFIND", "/dav")["method"] == "PROPFIND"


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_are_consumed_on_keep_alive(connection: http.client.HTTPSConnection, chunked: bool) -> None:
    """After a POST with a sized or chunked body, the next request on the same connection is echoed intact."""
    body = iter([b"abc", b"def"]) if chunked else b"abcdef"
    assert _exchange(connection, "POST", "/first", body=body, encode_chunked=chunked)["method"] == "POST"
    assert _exchange(connection, "DELETE", "/second")["path"] == "/second"


def test_certificate_is_verified_for_upstream_name(certs: DevCerts, upstream: RunningUpstream) -> None:
    """A TLS client verifying the name demo-upstream.local (the SNI Envoy sends) completes the handshake."""
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="demo-upstream.local") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_serve_exits_cleanly_on_sigterm(certs: DevCerts) -> None:
    """`serve` in its own process answers requests and exits 0 on SIGTERM."""
    script = (
        "import sys; from pathlib import Path; from extauth.devtools.upstream import serve; "
        "serve('127.0.0.1', int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"
    )
    with start_in_thread(certs.upstream_cert, certs.upstream_key) as probe:
        port = probe.port  # a port known to be free once the probe stops
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(port), str(certs.upstream_cert), str(certs.upstream_key)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in (process.stderr.readline() if process.stderr else "")
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        assert _exchange(connection, "GET", "/alive")["path"] == "/alive"
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
