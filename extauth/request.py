"""A read-only view of what Envoy sent, built once per Check and shared by every phase.

Attribute access goes straight to the upb message; nothing is copied that a phase does not ask for.
"""

from collections.abc import Mapping

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest


class Request:
    __slots__ = ("_http", "_path", "_query", "_source", "context_extensions", "headers")

    def __init__(self, check: CheckRequest) -> None:
        attributes = check.attributes
        self._http = attributes.request.http
        self._source = attributes.source
        #: Envoy lower-cases header names; values are as received (Envoy has already rejected CR/LF/NUL).
        self.headers: Mapping[str, str] = self._http.headers
        #: Per-route labels set in the Envoy route (e.g. service, route) to name what is being accessed.
        self.context_extensions: Mapping[str, str] = attributes.context_extensions
        raw_path = self._http.path
        path, separator, query = raw_path.partition("?")
        self._path = path
        self._query = query if separator else ""

    @property
    def request_id(self) -> str:
        return self._http.headers.get("x-request-id", "") or self._http.id

    @property
    def method(self) -> str:
        return self._http.method

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def scheme(self) -> str:
        return self._http.scheme

    @property
    def path(self) -> str:
        """The path without the query string, as normalised by Envoy."""
        return self._path

    @property
    def query(self) -> str:
        return self._query

    @property
    def source_address(self) -> str:
        return self._source.address.socket_address.address

    @property
    def peer_principal(self) -> str:
        """The mTLS peer identity Envoy extracted (URI SAN such as a SPIFFE ID, else the subject), or ''."""
        return self._source.principal
