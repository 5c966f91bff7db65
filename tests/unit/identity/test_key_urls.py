"""Key material only over TLS: which JWKS/discovery URLs are accepted, tried with every spelling of a host."""

import http.client
import ipaddress
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config
from extauth.documents.urls import key_url_problem

#: Host spellings and whether each is loopback (decided here by hand, not by the code under test).
HOSTS = {
    "127.0.0.1": True, "127.255.3.9": True, "[::1]": True, "[0:0:0:0:0:0:0:1]": True, "[::0001]": True,
    "localhost": True, "LOCALHOST": True, "LocalHost": True,
    "localhost.": False, "localhost.evil.example": False, "evil-localhost": False, "127.0.0.1.evil.example": False,
    "127.1": False, "2130706433": False, "0x7f000001": False, "0177.0.0.1": False, "[::ffff:127.0.0.1]": False,
    "0.0.0.0": False, "[::]": False, "128.0.0.1": False, "evil.example": False, "idp.example.com": False,
    "[fe80::1%25lo]": False,
}
SCHEMES = ["http", "HTTP", "Http", "https", "HTTPS", "hTtPs"]
#: Userinfo is never accepted: `http://localhost@evil.example` connects to evil.example.
USERINFO = ["", "localhost@", "127.0.0.1@", "user:pw@", "[::1]@", "@"]
PORTS = ["", ":80", ":8443", ":65535"]
PATHS = ["", "/", "/jwks.json", "/.well-known/openid-configuration", "/a?b=c", "/#x"]


@given(st.sampled_from(SCHEMES), st.sampled_from(USERINFO), st.sampled_from(list(HOSTS)), st.sampled_from(PORTS),
       st.sampled_from(PATHS))
def test_http_is_accepted_only_for_loopback_and_https_for_any_host(
        scheme: str, userinfo: str, host: str, port: str, path: str) -> None:
    """A URL is accepted iff it has no userinfo and is https, or is http to 127.0.0.0/8, ::1 or localhost."""
    url = f"{scheme}://{userinfo}{host}{port}{path}"
    secure = scheme.lower() == "https" and "%" not in host
    expected = not userinfo and (secure or (scheme.lower() == "http" and HOSTS[host]))
    assert (key_url_problem(url) is None) == expected, url


@given(st.sampled_from(["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://localhost/k"]),
       st.integers(min_value=0, max_value=40),
       st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x7f", "\x0b", "\u00a0", "é", "\u2028"]))
def test_whitespace_control_and_non_ascii_characters_anywhere_are_refused(url: str, position: int,
                                                                          char: str) -> None:
    """`urlsplit` silently drops tabs and newlines, so `http://local\\nhost.evil` must not be read as something
    else: any such character makes the URL unusable, wherever it sits."""
    position = min(position, len(url))
    assert key_url_problem(url[:position] + char + url[position:]) is not None


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/jwks", "file:///etc/jwks.json", "https:idp.example/jwks",
                                 "https:///jwks", "//idp.example/jwks", "https://idp.example:99999/jwks",
                                 "https://idp.example:x/jwks", "https://[::1/jwks", "jwks.json", ""])
def test_anything_that_is_not_a_plain_http_url_is_refused(url: str) -> None:
    """Other schemes, missing hosts and unparsable ports or IPv6 literals are refused with a reason."""
    assert key_url_problem(url)


URL_PIECES = ["http://", "127.0.0.1", "localhost", "[::1]", "evil.example", "@", ":", "/", "?", "#", "\\", ".",
              "%2e", "%40", "[", "]", ":8080", "%25", ";", "&"]


@settings(max_examples=1000)
@given(st.sampled_from(["http://", "HTTP://", "http:/", "http:"]),
       st.lists(st.sampled_from(URL_PIECES), min_size=1, max_size=8).map("".join))
def test_an_accepted_http_url_is_fetched_from_loopback_as_urllib_reads_it(scheme: str, rest: str) -> None:
    """No parser differential: for any accepted http URL, the host urllib and http.client actually connect to
    is loopback, however the pieces are combined."""
    url = scheme + rest
    if key_url_problem(url) is not None:
        return
    host, _ = http.client.HTTPConnection("placeholder")._get_hostport(urllib.request.Request(url).host, None)
    assert host == "localhost" or ipaddress.ip_address(host).is_loopback, url


VALID_PROVIDER = "    - name: corp\n      issuer: {issuer}\n      audiences: [api]\n      jwks: {jwks}\n"
CONFIG_CASES = {
    "http jwks url": (
        VALID_PROVIDER.format(issuer="https://idp.example", jwks="{url: 'http://idp.example/jwks'}"),
        "7: authentication.providers[0].jwks.url: 'http://idp.example/jwks' must be https://",
    ),
    "http discovery issuer": (
        VALID_PROVIDER.format(issuer="http://idp.example", jwks="{oidc_discovery: true}"),
        "4: authentication.providers[0]: issuer 'http://idp.example' must be https://",
    ),
    "userinfo in a jwks url": (
        VALID_PROVIDER.format(issuer="https://idp.example", jwks="{url: 'http://localhost@evil.example/jwks'}"),
        "7: authentication.providers[0].jwks.url: 'http://localhost@evil.example/jwks' must name its host as "
        "host or host:port (no userinfo",
    ),
}


@pytest.mark.parametrize(("provider", "expected"), CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_insecure_key_urls_are_config_errors_with_file_and_line(tmp_path: Path, provider: str,
                                                                expected: str) -> None:
    """An http:// key URL to a non-loopback host stops the config at load, naming file, line and field."""
    path = tmp_path / "extauth.yaml"
    (tmp_path / "p.yaml").write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\n")
    path.write_text("policy: {path: p.yaml}\nauthentication:\n  providers:\n" + provider)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}:{expected}")


def test_loopback_http_key_urls_load(tmp_path: Path) -> None:
    """A local test IdP over http on loopback is a valid configuration, for discovery and for a JWKS URL."""
    path = tmp_path / "extauth.yaml"
    (tmp_path / "p.yaml").touch()
    path.write_text("policy: {path: p.yaml}\nauthentication:\n  providers:\n"
                    + VALID_PROVIDER.format(issuer="http://127.0.0.1:8080", jwks="{oidc_discovery: true}")
                    + VALID_PROVIDER.format(issuer="other", jwks="{url: 'http://[::1]:9/jwks'}").replace("corp", "b"))
    assert len(load_config(path).authentication.providers) == 2
