"""Repeated header lines and query parameters through the real Envoy: Envoy joins repeated header lines with `,`
before extauth sees them, and every spelling decides as its values do canonically, or is the documented 400."""

import http.client
import json
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.spellings import combined, header_spellings, query_spellings

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, forward_every_path
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream
from extauth.reasons import Reason

POLICIES = Path(__file__).parent / "policies" / "repeated_values"
HEADER_VALUES = ["web", "ios", "legacy", "android", ""]
QUERY_VALUES = ["summary", "full", "raw", "other", ""]


class Client:
    """Raw HTTP/1.1 through Envoy, so a header can be sent on several lines."""

    def __init__(self, envoy: EnvoyProcess, certs: DevCerts) -> None:
        self.port = envoy.port
        self.tls = ssl.create_default_context(cafile=str(certs.ca_cert))
        self.token = mint_token(certs.jwt_signing_key, subject="bob", claims={"roles": ["member"]})
        self.canonical: dict[tuple[str, str | None], Reason] = {}

    def reason(self, target: str, lines: Sequence[tuple[str, str]] = ()) -> Reason:
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.tls, timeout=10)
        try:
            connection.putrequest("GET", target)
            connection.putheader("authorization", f"Bearer {self.token}")
            for name, value in lines:
                connection.putheader(name, value)
            connection.endheaders()
            reply = connection.getresponse()
            body = reply.read()
        finally:
            connection.close()
        if reply.status == 200:
            return Reason.OK
        return Reason(json.loads(body)["reason"])

    def header_canonically(self, value: str) -> Reason:
        """The decision for `x-client` sent once with exactly this value."""
        key = ("header", value)
        if key not in self.canonical:
            self.canonical[key] = self.reason("/values/header", [("x-client", value)])
        return self.canonical[key]

    def query_canonically(self, value: str | None) -> Reason:
        """The decision for `view=value` spelt plainly, or without the parameter (None)."""
        key = ("query", value)
        if key not in self.canonical:
            self.canonical[key] = self.reason("/values/query" if value is None else f"/values/query?view={value}")
        return self.canonical[key]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
           envoy_binary: Path) -> Iterator[Client]:
    run_dir = tmp_path_factory.mktemp("repeated-values")
    extauth = ExtauthProcess(run_dir / "extauth", extauth_config(run_dir / "extauth", certs,
                                                                  policy={"path": str(POLICIES)}))
    extauth.wait_serving()
    envoy = EnvoyProcess(run_dir, certs, upstream.port, extauth.addresses, edit=forward_every_path)
    yield Client(envoy, certs)
    envoy.stop()
    extauth.stop()


def test_envoy_joins_repeated_header_lines_with_a_bare_comma(client: Client) -> None:
    """What extauth's value splitting relies on: Envoy hands ext_authz repeated lines joined with `,` (no space),
    Cookie lines included (HTTP/1.1), and each line trimmed."""
    lines = [("x-probe", "a"), ("x-probe", " b "), ("cookie", "k=1"), ("cookie", "j=2")]
    assert client.reason("/values/joined", lines) is Reason.OK
    assert client.reason("/values/joined", [("x-probe", "a, b"), ("cookie", "k=1,j=2")]) is Reason.FORBIDDEN


@pytest.mark.parametrize("lines, reason", [
    (["web"], Reason.OK),
    (["web", "ios"], Reason.OK),
    (["web", "web"], Reason.OK),
    (["web", "legacy"], Reason.DENIED_BY_RULE),
    (["ios, legacy"], Reason.DENIED_BY_RULE),
    (["web", "android"], Reason.AMBIGUOUS_REQUEST),
    (["web", ""], Reason.AMBIGUOUS_REQUEST),
    (["android"], Reason.FORBIDDEN),
])
def test_repeated_header_lines_are_read_as_one_list(client: Client, lines: list[str], reason: Reason) -> None:
    """Two `x-client` lines reach extauth as one comma-joined value: a denied value on either line denies,
    values that disagree on the allow rule are a 400, values that all allow allow."""
    assert client.reason("/values/header", [("x-client", line) for line in lines]) is reason


@pytest.mark.parametrize("query, reason", [
    ("view=summary&view=full", Reason.OK),
    ("view=summary&view=raw", Reason.DENIED_BY_RULE),
    ("VIEW=raw", Reason.DENIED_BY_RULE),
    ("vi%65w=r%61w", Reason.DENIED_BY_RULE),
    ("view[]=raw&view=summary", Reason.DENIED_BY_RULE),
    ("view=summary&view=other", Reason.AMBIGUOUS_REQUEST),
    ("View=summary", Reason.AMBIGUOUS_REQUEST),
    ("view=+summary+", Reason.OK),
    ("view=summary;view=raw", Reason.DENIED_BY_RULE),
])
def test_repeated_query_parameters_are_every_occurrence(client: Client, query: str, reason: Reason) -> None:
    """Every occurrence and spelling of `view` counts: any `raw` denies, disagreeing values are a 400."""
    assert client.reason(f"/values/query?{query}") is reason


def test_ambiguous_request_is_a_400_with_its_reason(client: Client) -> None:
    """The client sees 400 and `ambiguous_request` in the JSON body."""
    connection = http.client.HTTPSConnection("localhost", client.port, context=client.tls, timeout=10)
    connection.request("GET", "/values/query?view=summary&view=other",
                       headers={"authorization": f"Bearer {client.token}"})
    reply = connection.getresponse()
    assert reply.status == 400 and b'"reason":"ambiguous_request"' in reply.read().replace(b" ", b"")
    connection.close()


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_every_header_spelling_through_envoy_decides_as_canonically(client: Client, data: st.DataObject) -> None:
    """Header lines, comma lists and padding, sent through Envoy, decide as the values spelt one by one."""
    spelling = data.draw(header_spellings(HEADER_VALUES))
    expected = combined(client.header_canonically(value) for value in spelling.values)
    assert client.reason("/values/header", [("x-client", line) for line in spelling.lines]) is expected, spelling


@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_every_query_spelling_through_envoy_decides_as_canonically(client: Client, data: st.DataObject) -> None:
    """Repeated, re-cased, array-suffixed and percent-encoded `view` parameters, sent through Envoy, decide as
    the values spelt one by one; an encoded tab is screened out first (400 control_characters)."""
    spelling = data.draw(query_spellings("view", QUERY_VALUES))
    expected = combined(client.query_canonically(value) for value in spelling.values)
    if "%09" in spelling.query:
        expected = Reason.CONTROL_CHARACTERS
    assert client.reason(f"/values/query?{spelling.query}") is expected, spelling
