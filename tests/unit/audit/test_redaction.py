"""Redaction: whatever a request contains, no token, cookie, API key or query secret reaches the audit stream."""

import asyncio
import json
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.checks import check_request

from extauth.audit.redact import MASK, Redactor, redact_query, scrub_text
from extauth.audit.writer import AuditWriter
from extauth.clock import SystemClock
from extauth.config.schema import AuthenticationConfig
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.policy.store import PolicyStore
from extauth.respond import Responder

DEMO_POLICIES = Path(__file__).parents[3] / "envoy" / "policies"
#: An operator who allowlisted credential headers by mistake: masking must still win.
HOSTILE_ALLOWLIST = ["user-agent", "authorization", "cookie", "x-api-key", "proxy-authorization", "x-custom",
                     "referer", "x-session-id"]

#: "zq" keeps a secret from ever equalling text the stream legitimately holds (hex hashes, ids, field names).
secrets = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=14, max_size=40).map("zq".__add__)
hostile_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=60)


class Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


class Harness:
    """The real pipeline (demo policy, dev keys) and the real writer rendering into memory."""

    def __init__(self, certs: DevCerts) -> None:
        self.loop = asyncio.new_event_loop()
        config = AuthenticationConfig.model_validate({"providers": [
            {"name": "dev", "issuer": DEV_ISSUER, "audiences": [DEV_AUDIENCE], "jwks": {"file": str(certs.jwks)}}]})
        self.authenticator = Authenticator(config, SystemClock())
        self.loop.run_until_complete(self.authenticator.start())
        self.policy = PolicyStore(DEMO_POLICIES, SystemClock())
        self.responder = Responder(config.forward)
        self.valid_token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})

    def audit_text(self, check: object, include_query: bool) -> str:
        async def run() -> str:
            output = Collect()
            redactor = Redactor(HOSTILE_ALLOWLIST, include_query=include_query)
            writer = AuditWriter(output, instance="t/0", redactor=redactor, linger_seconds=0)
            await writer.start()
            pipeline = Pipeline(self.authenticator, self.policy, self.responder, writer, "t/0", redactor=redactor)
            await pipeline.check(check)  # type: ignore[arg-type]
            await writer.close()
            return output.data.decode()
        return self.loop.run_until_complete(run())


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = Harness(create_dev_certs(tmp_path_factory.mktemp("certs")))
    yield harness
    harness.loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token_parts=st.tuples(secrets, secrets, secrets),
    api_key=secrets,
    cookie=secrets,
    query_secret=secrets,
    basic=secrets,
    use_valid_token=st.booleans(),
    include_query=st.booleans(),
    path_prefix=st.sampled_from(["/api/orders", "/public/x", "/admin/users", "/elsewhere"]),
    noise=st.dictionaries(st.sampled_from(["user-agent", "x-custom", "referer", "x-session-id", "accept"]),
                          hostile_text, max_size=4),
)
def test_no_credential_reaches_the_audit_stream(
        harness: Harness, token_parts: tuple[str, str, str], api_key: str, cookie: str, query_secret: str,
        basic: str, use_valid_token: bool, include_query: bool, path_prefix: str, noise: dict[str, str]) -> None:
    """Tokens (in Authorization, a cookie, the path, the user agent), API keys, cookies and query secrets are
    never written, whatever else the request carries and even with credential headers allowlisted."""
    jwt_like = "eyJ{}.{}.{}".format(*token_parts)
    token = harness.valid_token if use_valid_token else jwt_like
    headers = {
        **noise,
        "authorization": f"Bearer {token}",
        "proxy-authorization": f"Basic {basic}",
        "cookie": f"session={cookie}; theme=dark",
        "x-api-key": api_key,
        "user-agent": f"{noise.get('user-agent', 'curl')} {jwt_like}",
        "referer": f"https://app.example/cb?code={query_secret}&access_token={query_secret}",
    }
    path = (f"{path_prefix}/{jwt_like};jsessionid={cookie}"
            f"?access_token={query_secret}&api_key={api_key}&sig={query_secret}&page=2")
    text = harness.audit_text(check_request(path, headers=headers, request_id="r-1"), include_query)

    assert '"event":"decision"' in text
    leaked = [secret for secret in (*token_parts, api_key, cookie, query_secret, basic, harness.valid_token,
                                    harness.valid_token.split(".")[2]) if secret in text]
    assert leaked == []
    event = next(json.loads(line) for line in text.splitlines() if '"event":"decision"' in line)
    assert event["headers"]["authorization"] == MASK and event["headers"]["cookie"] == MASK
    assert ("query" in event) == include_query


def test_query_is_left_out_by_default_and_masked_when_kept() -> None:
    """Without include_query the query never appears; with it, secret-named parameters are masked."""
    redactor = Redactor()
    assert "query" not in redactor.scrub({"path": "/a", "query": "token=x"})
    kept = Redactor(include_query=True).scrub({"path": "/a", "query": "page=2&access_token=abc&API_KEY=k"})
    assert kept["query"] == f"page=2&access_token={MASK}&API_KEY={MASK}"


@pytest.mark.parametrize(("text", "expected"), [
    ("curl eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl", f"curl {MASK}"),
    ("Bearer abc.def", f"Bearer {MASK}"),
    ("/api/x;jsessionid=ABCDEF/y", f"/api/x;jsessionid={MASK}/y"),
    ("/api/x;v=2", "/api/x;v=2"),
    ("plain text", "plain text"),
])
def test_scrub_masks_token_shaped_text(text: str, expected: str) -> None:
    """JWTs, scheme credentials and secret path parameters are masked; ordinary text is left alone."""
    assert scrub_text(text) == expected


def test_secret_named_headers_are_masked_even_when_allowlisted() -> None:
    """An allowlisted Authorization header is recorded as present but masked; unlisted headers are absent."""
    redactor = Redactor(["authorization", "user-agent"])
    headers = redactor.headers({"authorization": "Bearer t", "user-agent": "curl", "x-other": "v"})
    assert headers == {"authorization": MASK, "user-agent": "curl"}


def test_invalid_traceparent_is_not_copied() -> None:
    """Only a well-formed W3C traceparent is kept; anything else a client sends becomes `[invalid]`."""
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert Redactor().scrub({"traceparent": valid})["traceparent"] == valid
    assert Redactor().scrub({"traceparent": "eyJ.x.y"})["traceparent"] == "[invalid]"
    assert redact_query("a=1&password=p") == f"a=1&password={MASK}"
