"""UrllibFetcher against a real HTTP server on 127.0.0.1, and the StaticFetcher test double."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from identity_helpers import Keys, jwks_document, public_jwk
from structlog.testing import capture_logs

from extauth.clock import ManualClock
from extauth.config.schema import JwksConfig, JwtProviderConfig
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
