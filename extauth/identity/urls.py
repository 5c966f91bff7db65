"""Key material travels over TLS: JWKS and OIDC discovery URLs are https, http only to this host.

A key fetched over plain HTTP from another host could be replaced on the way, and whoever replaces it
mints tokens extauth accepts. Loopback is the exception (a local test IdP, a sidecar) because traffic to it
never leaves the machine. The rule is applied to configured URLs at load, to the `jwks_uri` of a discovery
document, and to every redirect the fetcher is asked to follow.
"""

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def key_url_problem(url: str) -> str | None:
    """Why `url` may not be used to fetch key material, or None if it may.

    Anything that two URL parsers might read differently is refused rather than interpreted: userinfo
    (`http://localhost@evil.example`), whitespace and control characters (which `urlsplit` silently drops),
    non-ASCII, an IPv6 zone. So the host checked here is the host the fetcher connects to.
    """
    if not url.isascii() or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        return "must not contain whitespace, control or non-ASCII characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme not in ("https", "http"):
        return "must be an https:// URL"
    if "@" in parts.netloc:
        return "must not contain userinfo ('@')"
    host = parts.hostname
    if not host:
        return "has no host"
    if "%" in host:
        return "must not contain an IPv6 zone"
    if parts.scheme == "http" and not is_loopback_host(host):
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
