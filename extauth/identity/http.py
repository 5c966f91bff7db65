"""The HTTP calls extauth makes: fetching key material (JWKS, OIDC discovery) off the request path, and posting
opaque tokens to an introspection endpoint (extauth.identity.introspection), both in a worker thread.

`HttpFetcher` is the seam: production uses `UrllibFetcher`, unit tests `StaticFetcher`.
"""

import asyncio
import functools
import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from extauth.documents.urls import key_url_problem

#: Key documents are a few KiB; anything near this is a misconfigured URL, not a key set.
MAX_BODY_BYTES = 1024 * 1024


class FetchError(Exception):
    """A GET or POST did not produce a usable body: network, TLS, timeout, non-200 status or an oversized body.
    The message names the method and URL, never what was sent."""

    def __init__(self, url: str, reason: str, method: str = "GET") -> None:
        super().__init__(f"{method} {url} failed: {reason}")
        self.url = url
        self.reason = reason


class HttpFetcher(Protocol):
    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        """The body of a 200 answer to GET `url`; anything else raises `FetchError`."""

    async def post(self, url: str, form: Mapping[str, str], *, headers: Mapping[str, str], timeout: float,
                   ca_file: Path | None) -> bytes:
        """The body of a 200 answer to a form POST to `url` (no redirect followed); anything else: `FetchError`."""


class _KeyUrlRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL keys may come from (extauth.documents.urls), and never from https to http,
    not even to loopback: a redirect must not undo the TLS the configuration asked for."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        problem = key_url_problem(newurl)
        if problem is None and req.type == "https" and urlsplit(newurl).scheme != "https":
            problem = "downgrades https to http"
        if problem is not None:
            fp.close()
            raise urllib.error.URLError(f"refused redirect to {newurl!r}: it {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class UrllibFetcher:
    """Blocking urllib in a worker thread: a fetch every few minutes does not justify an HTTP client dependency.

    TLS is verified against the system trust store, or only against `ca_file` when one is given. Only URLs
    that pass extauth.documents.urls are fetched, and redirects are held to the same rule.
    """

    async def get(self, url: str, *, timeout: float, ca_file: Path | None) -> bytes:
        return await asyncio.to_thread(self._get, url, timeout, ca_file)

    @staticmethod
    def _get(url: str, timeout: float, ca_file: Path | None) -> bytes:
        problem = key_url_problem(url)
        if problem is not None:
            raise FetchError(url, f"refused: the URL {problem}")
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "extauth"})
        try:
            context = ssl.create_default_context(cafile=ca_file)
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _KeyUrlRedirects())
            with opener.open(request, timeout=timeout) as response:
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

    async def post(self, url: str, form: Mapping[str, str], *, headers: Mapping[str, str], timeout: float,
                   ca_file: Path | None) -> bytes:
        return await asyncio.to_thread(_post, url, form, headers, timeout, ca_file)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A POST carries a token and client credentials: a redirect would send them somewhere not configured."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        return None


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Loading a trust store costs ~20 ms: fine for a key fetch every few minutes, not for a call per new token,
    so the introspection call reuses one context per CA bundle (read at the first call)."""
    return ssl.create_default_context(cafile=ca_file)


def _post(url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout: float,
          ca_file: Path | None) -> bytes:
    problem = key_url_problem(url)
    if problem is not None:
        raise FetchError(url, f"refused: the URL {problem}", "POST")
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode("ascii"), method="POST",
        headers={"Accept": "application/json", "User-Agent": "extauth",
                 "Content-Type": "application/x-www-form-urlencoded", **headers})
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls_context(ca_file)),
                                             _NoRedirects())
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise FetchError(url, f"HTTP status {response.status}", "POST")
            body: bytes = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(url, f"HTTP status {error.code}", "POST") from None
    except urllib.error.URLError as error:
        raise FetchError(url, str(error.reason), "POST") from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise FetchError(url, str(error) or type(error).__name__, "POST") from None
    if len(body) > MAX_BODY_BYTES:
        raise FetchError(url, f"body larger than {MAX_BODY_BYTES} bytes", "POST")
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

    async def post(self, url: str, form: Mapping[str, str], *, headers: Mapping[str, str], timeout: float,
                   ca_file: Path | None) -> bytes:
        return await self.get(url, timeout=timeout, ca_file=ca_file)
