"""A read-only view of what Envoy sent, built once per Check and shared by every phase.

It also holds the *canonical* request (docs/security.md): the one spelling of the request that screening, route
matching, conditions, rate-limit keys and the audit trail all decide on, so that two spellings an upstream serves
as the same resource can never be decided differently. The wire form stays available for screening (which must see
what the client sent) and for the audit trail.

Attribute access goes straight to the upb message; nothing is copied that a phase does not ask for, and each
canonical form is computed once, on first use.
"""

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

#: What a DNS name or IPv4 literal may contain once lower-cased (RFC 3986 reg-name without escapes or sub-delims).
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_KNOWN_HOSTS: dict[str, str | None] = {}
_KNOWN_HOSTS_MAX = 4096
#: The `context_extensions` entry the egress listener's Envoy routes set (`direction: egress`, envoy/egress.yaml).
DIRECTION = "direction"
EGRESS = "egress"


def canonical_method(method: str) -> str:
    """HEAD is served as GET by every upstream framework, so it is authorised, limited and audited as GET."""
    return "GET" if method == "HEAD" else method


def canonical_segments(path: str) -> tuple[str, ...] | None:
    """The path as the upstream reads it, split at '/': `;parameters` dropped from every segment (as Tomcat, Jetty
    and Spring do), each segment percent-decoded once, and a trailing slash dropped (`/a/b/` is `/a/b`). Case is
    kept: matching decides whether it counts. None when a segment does not decode to UTF-8 text."""
    segments = path.split("/")
    if len(segments) > 2 and segments[-1] == "":
        segments.pop()
    if ";" in path or "%" in path:
        for index, segment in enumerate(segments):
            segment = segment.partition(";")[0]
            if "%" in segment:
                try:
                    segment = unquote(segment, errors="strict")
                except UnicodeDecodeError:
                    return None
            segments[index] = segment
    return tuple(segments)


def fold_case(text: str) -> str:
    """Lower case as case-insensitive upstreams compare: through upper case, so `ſ` (long s) and `ı` (dotless i)
    fold to `s` and `i`, as Java's equalsIgnoreCase and .NET's OrdinalIgnoreCase see them."""
    return text.lower() if text.isascii() else text.upper().lower()


def canonical_host(host: str) -> str | None:
    """`API.Example.com.:8443` → `api.example.com`, `[::1]:80` → `::1`; None when it is not a host at all.
    A gateway sees few distinct hosts, so answers are remembered (a bounded table, cleared when full)."""
    known = _KNOWN_HOSTS.get(host, False)
    if known is not False:
        return known  # type: ignore[return-value]
    if len(_KNOWN_HOSTS) >= _KNOWN_HOSTS_MAX:
        _KNOWN_HOSTS.clear()
    canonical = _KNOWN_HOSTS[host] = _parse_host(host)
    return canonical


def _parse_host(host: str) -> str | None:
    host = host.lower()
    if host.startswith("["):
        literal, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]) and int(port[1:]) <= 65535)):
            return None
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            return None
    name, colon, port = host.partition(":")
    if colon and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return None
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return "" if not colon and not host else None
    return name if _HOST_NAME.fullmatch(name) else None


class Request:
    __slots__ = ("_folded", "_folded_segments", "_hostname", "_http", "_path", "_query", "_query_params",
                 "_segments", "_source", "_source_ip", "_wire_path", "context_extensions", "headers", "method")

    def __init__(self, check: CheckRequest) -> None:
        attributes = check.attributes
        self._http = http = attributes.request.http
        self._source = attributes.source
        #: Envoy lower-cases header names; values are as received (Envoy has already rejected CR/LF/NUL).
        self.headers: Mapping[str, str] = http.headers
        #: Per-route labels set in the Envoy route (e.g. service, route) to name what is being accessed.
        self.context_extensions: Mapping[str, str] = attributes.context_extensions
        #: The method every phase decides on: HEAD is GET (see `canonical_method`); `wire_method` is as sent.
        self.method = canonical_method(http.method)
        wire_path, separator, query = http.path.partition("?")
        self._wire_path = wire_path
        self._query = query if separator else ""
        # Computed on first use by the properties below.
        self._path: str | None = None
        self._segments: tuple[str, ...] | None = None
        self._folded: str | None = None
        self._folded_segments: tuple[str, ...] | None = None
        self._hostname: str | None = None
        self._query_params: dict[str, list[str]] | None = None
        self._source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | bool | None = False

    @property
    def request_id(self) -> str:
        return self._http.headers.get("x-request-id", "") or self._http.id

    @property
    def wire_method(self) -> str:
        return self._http.method

    @property
    def host(self) -> str:
        """`:authority` as sent; policies see `hostname`."""
        return self._http.host

    @property
    def scheme(self) -> str:
        return self._http.scheme

    @property
    def http_version(self) -> str:
        """`1.0`, `1.1`, `2` or `3`: Envoy's `HTTP/x` protocol without its prefix (what the WAF's rules expect)."""
        protocol = self._http.protocol
        return protocol[5:] if protocol.startswith("HTTP/") else protocol or "1.1"

    @property
    def body(self) -> bytes:
        """The request body Envoy buffered for this route (`with_request_body`), possibly cut at its limit;
        empty where the route sends none."""
        http = self._http
        return http.raw_body or http.body.encode("utf-8", "surrogateescape")

    @property
    def wire_path(self) -> str:
        """The path without the query string, as Envoy forwards it (after its own RFC 3986 normalisation)."""
        return self._wire_path

    @property
    def has_path_parameters(self) -> bool:
        """Whether any segment carries `;parameters`, which some upstreams drop before routing."""
        return ";" in self._wire_path

    @property
    def path_segments(self) -> tuple[str, ...]:
        """The canonical path split at '/', so `/a/b` → ('', 'a', 'b'). An undecodable path (refused by screening)
        keeps its wire segments."""
        if self._segments is None:
            self._segments = canonical_segments(self._wire_path) or tuple(self._wire_path.split("/"))
        return self._segments

    @property
    def path(self) -> str:
        """The canonical path (see `canonical_segments`), case kept."""
        if self._path is None:
            segments = self.path_segments
            self._path = "/".join(segments) if len(segments) > 1 else self._wire_path
        return self._path

    @property
    def path_is_text(self) -> bool:
        return canonical_segments(self._wire_path) is not None

    @property
    def folded_path(self) -> str:
        """The canonical path lower-cased, for case-insensitive route matching (the default)."""
        if self._folded is None:
            self._folded = fold_case(self.path)
        return self._folded

    @property
    def folded_segments(self) -> tuple[str, ...]:
        if self._folded_segments is None:
            segments = self.path_segments
            folded = tuple(fold_case(self.path).split("/"))
            # One fold of the whole path, unless a decoded segment holds a '/' (only with encoded slashes allowed).
            self._folded_segments = folded if len(folded) == len(segments) else tuple(map(fold_case, segments))
        return self._folded_segments

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
        """The canonical host (`canonical_host`): lower-case, no trailing dot, no port; '' when unparsable
        (screening refuses such a request before any phase looks)."""
        if self._hostname is None:
            self._hostname = canonical_host(self._http.host) or ""
        return self._hostname

    @property
    def host_is_valid(self) -> bool:
        return bool(self.hostname) or self._http.host == ""

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
    def is_egress(self) -> bool:
        """A call leaving the cluster through the egress gateway: set by that listener's Envoy routes
        (`context_extensions`), which a client cannot send, so no request can choose the allowlist it is judged by."""
        return self.context_extensions.get(DIRECTION) == EGRESS

    @property
    def peer_principal(self) -> str:
        """The mTLS peer identity Envoy extracted (URI SAN such as a SPIFFE ID, else the subject), or ''."""
        return self._source.principal

    @property
    def peer_certificate(self) -> str:
        """The verified client certificate as Envoy forwards it (URL-encoded PEM, `include_peer_certificate`),
        or ''. Read only through `identity.peer`, which checks it names the same identity."""
        return self._source.certificate
