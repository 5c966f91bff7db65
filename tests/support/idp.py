"""A real HTTP identity provider for tests: serves OIDC discovery and a JWKS, and can be made to fail or stall."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class IdentityProvider:
    def __init__(self, jwks_file: Path) -> None:
        self.jwks: dict[str, Any] = json.loads(jwks_file.read_text())
        self.failing = False
        self.delay_seconds = 0.0
        self.requests: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests.append(self.path)
                time.sleep(provider.delay_seconds)
                if provider.failing:
                    self.send_error(503, "IdP down")
                    return
                documents = {"/.well-known/openid-configuration": {"issuer": provider.issuer,
                                                                    "jwks_uri": f"{provider.issuer}/jwks.json"},
                             "/jwks.json": provider.jwks}
                if self.path not in documents:
                    self.send_error(404)
                    return
                body = json.dumps(documents[self.path]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
