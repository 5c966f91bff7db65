"""A real RFC 7662 introspection endpoint for tests: answers from a table of tokens, checks extauth's client
credentials, counts its calls, and can be made to fail, stall or redirect."""

import base64
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

CLIENT_ID = "extauth"
CLIENT_SECRET = "s3cret:with/odd+chars"  # form-encoding matters in HTTP Basic (RFC 6749 2.3.1)


class IntrospectionEndpoint:
    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        #: token -> the JSON answer for it; any other token is `{"active": false}`.
        self.answers: dict[str, dict[str, Any]] = {}
        self.failing = False
        self.delay_seconds = 0.0
        self.redirect_to: str | None = None
        #: Calls by token, for caching and single-flight assertions.
        self.calls: Counter[str] = Counter()
        #: Client authentication the endpoint saw on each call: `basic` or `post`.
        self.client_auth: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = {name: values[0] for name, values in parse_qs(self.rfile.read(length).decode()).items()}
                token = form.get("token", "")
                endpoint.calls[token] += 1
                time.sleep(endpoint.delay_seconds)
                if endpoint.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("location", endpoint.redirect_to)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if endpoint.failing:
                    self.send_error(503, "introspection down")
                    return
                method = endpoint.authenticated(self.headers.get("authorization"), form)
                if method is None:
                    self.send_error(401, "bad client credentials")
                    return
                endpoint.client_auth.append(method)
                body = json.dumps(endpoint.answers.get(token, {"active": False})).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._client = (client_id, client_secret)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/introspect"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def hits(self) -> int:
        return sum(self.calls.values())

    def authenticated(self, authorization: str | None, form: dict[str, str]) -> str | None:
        """How the client authenticated (`basic`, `post`), or None when it did not prove to be extauth."""
        if authorization is not None and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            client_id, _, secret = pair.partition(":")
            return "basic" if (unquote_plus(client_id), unquote_plus(secret)) == self._client else None
        if (form.get("client_id"), form.get("client_secret")) == self._client:
            return "post"
        return None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
