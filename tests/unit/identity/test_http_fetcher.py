"""UrllibFetcher against a real HTTP server on 127.0.0.1, and the StaticFetcher test double."""

import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from structlog.testing import capture_logs
from support.identity_helpers import Keys, jwks_document, public_jwk

from extauth.clock import ManualClock
from extauth.config.schema import JwksConfig, JwtProviderConfig
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.identity.http import MAX_BODY_BYTES, FetchError, StaticFetcher, UrllibFetcher
from extauth.identity.jwks import JwksStore


@pytest.fixture
def idp(keys: Keys) -> Iterator[str]:
    """A tiny IdP in a thread serving a discovery document, a JWKS, an oversized body and 404/204 answers."""
    routes: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    discovery = {"issuer": base, "jwks_uri": f"{base}/jwks"}
    routes["/.well-known/openid-configuration"] = (200, json.dumps(discovery).encode())
    routes["/jwks"] = (200, jwks_document(public_jwk(keys.rsa, "rsa-1")))
    routes["/big"] = (200, b" " * (MAX_BODY_BYTES + 1))
    routes["/empty"] = (204, b"")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    server.server_close()
    thread.join()


async def test_urllib_fetcher_loads_keys_through_oidc_discovery(idp: str) -> None:
    """A JWKS store with the real fetcher follows discovery to the JWKS over HTTP and becomes ready."""
    config = JwtProviderConfig(name="idp", issuer=idp, audiences=["api"], jwks=JwksConfig(oidc_discovery=True))
    store = JwksStore(config, ManualClock(), UrllibFetcher())
    with capture_logs() as logs:
        await store.start()
    await store.stop()
    assert store.ready
    assert logs[0]["source"] == f"{idp}/jwks"


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/missing", "HTTP status 404"), ("/empty", "HTTP status 204"), ("/big", f"body larger than {MAX_BODY_BYTES}")],
)
async def test_urllib_fetcher_refuses_anything_but_a_bounded_200(idp: str, path: str, reason: str) -> None:
    """Non-200 answers and bodies over 1 MiB raise FetchError with the URL and the reason."""
    with pytest.raises(FetchError) as caught:
        await UrllibFetcher().get(f"{idp}{path}", timeout=5, ca_file=None)
    assert caught.value.url == f"{idp}{path}"
    assert reason in caught.value.reason


async def test_urllib_fetcher_reports_connection_failures() -> None:
    """An unreachable host is a FetchError, not an OSError leaking out."""
    with pytest.raises(FetchError):
        await UrllibFetcher().get("http://127.0.0.1:1/jwks", timeout=1, ca_file=None)


async def test_static_fetcher_answers_from_its_table_and_counts_calls() -> None:
    """StaticFetcher returns bytes, raises configured exceptions, 404s unknown URLs, and counts every call."""
    fetcher = StaticFetcher({"https://a/ok": b"body", "https://a/down": FetchError("https://a/down", "refused")})
    assert await fetcher.get("https://a/ok", timeout=1, ca_file=None) == b"body"
    for url in ("https://a/down", "https://a/other"):
        with pytest.raises(FetchError):
            await fetcher.get(url, timeout=1, ca_file=None)
    assert fetcher.calls == {"https://a/ok": 1, "https://a/down": 1, "https://a/other": 1}


class _Servers:
    """An HTTPS server (dev CA certificate for localhost/127.0.0.1) and a plain HTTP one on loopback; each
    answers `/jwks` with a key set and `/redirect?to=URL&code=N` with that redirect, and logs every path."""

    def __init__(self, certs: DevCerts, jwks: bytes) -> None:
        self.requests: list[tuple[str, str]] = []
        self.ca_file = certs.ca_cert
        servers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
                servers.requests.append((scheme, self.path))
                path, _, query = self.path.partition("?")
                if path == "/jwks":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(jwks)))
                    self.end_headers()
                    self.wfile.write(jwks)
                    return
                arguments = dict(urllib.parse.parse_qsl(query))
                self.send_response(int(arguments.get("code", "302")))
                self.send_header("Location", arguments["to"])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        self._servers[0].socket = context.wrap_socket(self._servers[0].socket, server_side=True)
        self.https = f"https://localhost:{self._servers[0].server_address[1]}"
        self.http = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def redirect(self, base: str, to: str, code: int = 302) -> str:
        return f"{base}/redirect?" + urllib.parse.urlencode({"to": to, "code": code})

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    certs = create_dev_certs(tmp_path_factory.mktemp("certs"))
    running = _Servers(certs, jwks_document({"kty": "oct", "k": "AA"}))
    yield running
    running.stop()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", ["{http}/jwks", "{http_upper}/jwks", "http://localhost:{http_port}/jwks"])
async def test_a_redirect_from_https_to_http_is_refused_even_to_loopback(servers: _Servers, code: int,
                                                                         target: str) -> None:
    """https → http would undo the TLS the configuration asked for: the fetch fails and the http URL is never
    requested, whatever the redirect status and however the http URL is spelled."""
    http_port = servers.http.rpartition(":")[2]
    location = target.format(http=servers.http, http_upper=servers.http.replace("http", "HTTP", 1),
                             http_port=http_port)
    servers.requests.clear()
    with pytest.raises(FetchError, match=r"refused redirect .* downgrades https to http"):
        await UrllibFetcher().get(servers.redirect(servers.https, location, code), timeout=5,
                                  ca_file=servers.ca_file)
    assert [scheme for scheme, _ in servers.requests] == ["https"]


@pytest.mark.parametrize("location", ["http://idp.example/jwks", "http://localhost@idp.example/jwks",
                                      "https://localhost@idp.example/jwks", "ftp://127.0.0.1/jwks",
                                      "http://127.0.0.1.idp.example/jwks"])
async def test_a_redirect_to_anything_but_https_or_loopback_http_is_refused(servers: _Servers,
                                                                            location: str) -> None:
    """From a loopback http IdP, a redirect may only go where a configured key URL could point."""
    with pytest.raises(FetchError, match="refused redirect"):
        await UrllibFetcher().get(servers.redirect(servers.http, location), timeout=5, ca_file=None)


async def test_redirects_within_the_rule_are_followed(servers: _Servers) -> None:
    """https → https and loopback http → https redirects still work: the JWKS arrives."""
    via_https = servers.redirect(servers.https, f"{servers.https}/jwks")
    upgraded = servers.redirect(servers.http, via_https)
    body = await UrllibFetcher().get(upgraded, timeout=5, ca_file=servers.ca_file)
    assert b"keys" in body


@pytest.mark.parametrize("url", ["http://idp.example/jwks", "http://localhost@127.0.0.1:1/jwks",
                                 "ftp://127.0.0.1/jwks"])
async def test_the_fetcher_refuses_an_insecure_url_without_connecting(url: str) -> None:
    """The fetcher applies the same rule to the URL it is given (a discovered jwks_uri, say)."""
    with pytest.raises(FetchError, match="refused"):
        await UrllibFetcher().get(url, timeout=1, ca_file=None)
