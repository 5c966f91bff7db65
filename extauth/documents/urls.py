"""Key material travels over TLS: JWKS and OIDC discovery URLs are https, http only to this host.

A key fetched over plain HTTP from another host could be replaced on the way, and whoever replaces it
mints tokens extauth accepts. Loopback is the exception (a local test IdP, a sidecar) because traffic to it
never leaves the machine. The rule is applied to configured URLs at load, to the `jwks_uri` of a discovery
document, and to every redirect the fetcher is asked to follow.
"""

import ipaddress
import re
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})
_AUTHORITY = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?$")


def key_url_problem(url: str) -> str | None:
    """Why `url` may not be used to fetch key material, or None if it may.

    Anything that two URL parsers might read differently is refused rather than interpreted: the authority
    must be exactly `host` or `host:port` (a DNS name, an IPv4 address or a bracketed IPv6 address), so
    userinfo (`http://localhost@evil.example`), percent-escapes, IPv6 zones and stray brackets are refused,
    as are whitespace and control characters (which `urlsplit` silently drops) and non-ASCII. The host checked
    here is therefore the host urllib connects to.
    """
    if not url.isascii() or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        return "must not contain whitespace, control or non-ASCII characters"
    try:
        parts = urlsplit(url)
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme not in ("https", "http"):
        return "must be an https:// URL"
    authority = _AUTHORITY.match(parts.netloc)
    if authority is None:
        return "must name its host as host or host:port (no userinfo, '%' escapes or stray brackets)"
    host, port = authority.group("host"), authority.group("port")
    if port is not None and int(port) > 65535:
        return "has a port out of range"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "has an invalid IPv6 address"
        host = host[1:-1]
    if parts.scheme == "http" and not is_loopback_host(host.lower()):
        return "must be https:// (http:// is allowed only for 127.0.0.0/8, ::1 and localhost)"
    return None


def is_loopback_host(host: str) -> bool:
    """`localhost` (exactly: `localhost.` is a DNS name that may resolve anywhere), or a loopback IP literal."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
