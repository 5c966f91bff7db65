"""A read-only view of what Envoy sent, built once per Check and shared by every phase.

Attribute access goes straight to the upb message; nothing is copied that a phase does not ask for.
"""

import ipaddress
from collections.abc import Mapping
from urllib.parse import parse_qs

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest


class Request:
    __slots__ = ("_hostname", "_http", "_path", "_query", "_query_params", "_segments", "_source",
                 "_source_ip", "context_extensions", "headers")

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
        # Computed on first use by the properties below, for the policy conditions that need them.
        self._segments: tuple[str, ...] | None = None
        self._hostname: str | None = None
        self._query_params: dict[str, list[str]] | None = None
        self._source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | bool | None = False

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
    def path_segments(self) -> tuple[str, ...]:
        """The path split at '/', so `/a/b` → ('', 'a', 'b'); computed once, for path templates."""
        if self._segments is None:
            self._segments = tuple(self._path.split("/"))
        return self._segments

    @property
    def query(self) -> str:
        return self._query

    @property
    def query_params(self) -> Mapping[str, list[str]]:
        """The query string decoded (`a=1&a=2` → {'a': ['1', '2']}); computed once."""
        if self._query_params is None:
            self._query_params = parse_qs(self._query, keep_blank_values=True)
        return self._query_params

    @property
    def hostname(self) -> str:
        """The host (`:authority`) lower-cased and without its port: `API.example.com:8443` → `api.example.com`."""
        if self._hostname is None:
            host = self._http.host.lower()
            if host.startswith("["):
                host = host[1:host.find("]")] if "]" in host else host
            elif host.count(":") == 1:
                host = host.partition(":")[0]
            self._hostname = host
        return self._hostname

    @property
    def source_address(self) -> str:
        return self._source.address.socket_address.address

    @property
    def source_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The client address parsed (an IPv4-mapped IPv6 address as IPv4), or None if it is not an IP."""
        if self._source_ip is False:
            try:
                address = ipaddress.ip_address(self.source_address)
            except ValueError:
                address = None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            self._source_ip = address
        return self._source_ip  # type: ignore[return-value]

    @property
    def peer_principal(self) -> str:
        """The mTLS peer identity Envoy extracted (URI SAN such as a SPIFFE ID, else the subject), or ''."""
        return self._source.principal
