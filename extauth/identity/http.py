"""The one HTTP call extauth makes: fetching key material (JWKS, OIDC discovery) off the request path.

`HttpFetcher` is the seam: production uses `UrllibFetcher`, unit tests `StaticFetcher`.
"""

import asyncio
import http.client
import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

#: Key documents are a few KiB; anything near this is a misconfigured URL, not a key set.
MAX_BODY_BYTES = 1024 * 1024


class FetchError(Exception):
    """A GET did not produce a usable body: network, TLS, timeout, non-200 status or an oversized body."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"GET {url} failed: {reason}")
        self.url = url
        self.reason = reason


class HttpFetcher(Protocol):
    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        """The body of a 200 answer to GET `url`; anything else raises `FetchError`."""


class UrllibFetcher:
    """Blocking urllib in a worker thread: a fetch every few minutes does not justify an HTTP client dependency.

    TLS is verified against the system trust store, or only against `ca_file` when one is given.
    """

    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        return await asyncio.to_thread(self._get, url, timeout, ca_file)

    @staticmethod
    def _get(url: str, timeout: float, ca_file: Path | None) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "extauth"})
        try:
            context = ssl.create_default_context(cafile=ca_file)
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                if response.status != 200:
                    raise FetchError(url, f"HTTP status {response.status}")
                body: bytes = response.read(MAX_BODY_BYTES + 1)
        except urllib.error.HTTPError as error:
            error.close()
            raise FetchError(url, f"HTTP status {error.code}") from error
        except urllib.error.URLError as error:
            raise FetchError(url, str(error.reason)) from error
        except (OSError, ValueError, http.client.HTTPException) as error:
            raise FetchError(url, str(error) or type(error).__name__) from error
        if len(body) > MAX_BODY_BYTES:
            raise FetchError(url, f"body larger than {MAX_BODY_BYTES} bytes")
        return body


class StaticFetcher:
    """Answers from a fixed table (bytes, or an exception to raise) and counts the calls per URL."""

    def __init__(self, responses: Mapping[str, bytes | Exception] | None = None) -> None:
        self.responses: dict[str, bytes | Exception] = dict(responses or {})
        self.calls: Counter[str] = Counter()

    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        self.calls[url] += 1
        response = self.responses.get(url, FetchError(url, "HTTP status 404"))
        if isinstance(response, Exception):
            raise response
        return response
