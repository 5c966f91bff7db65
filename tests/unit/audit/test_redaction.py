"""Redaction: whatever a request contains, no token, cookie, API key or query secret reaches the audit stream."""

import asyncio
import json
import string
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.checks import check_request

from extauth.audit.redact import MASK, SCRUB_CACHE_MAX_TEXT, Redactor, redact_query, scrub_text
from extauth.audit.writer import AuditWriter
from extauth.bundle.store import PolicyStore
from extauth.clock import SystemClock
from extauth.config import ConfigError, load_config
from extauth.config.schema import AuthenticationConfig
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.tokens import mint_token
from extauth.identity.authenticator import Authenticator
from extauth.pipeline import Pipeline
from extauth.respond import Responder

DEMO_POLICIES = Path(__file__).parents[3] / "envoy" / "policies"
#: An operator who allowlisted credential headers by mistake: masking must still win.
HOSTILE_ALLOWLIST = ["user-agent", "authorization", "cookie", "x-api-key", "proxy-authorization", "x-custom",
                     "referer", "x-session-id"]

#: "zq" keeps a secret from ever equalling text the stream legitimately holds (hex hashes, ids, field names).
secrets = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=14, max_size=40).map("zq".__add__)
hostile_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=60)

ALNUM = string.ascii_letters + string.digits
BASE64URL = ALNUM + "-_"


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


#: One strategy per credential family of CREDENTIAL_PATTERNS, in the shapes the issuers hand out.
CREDENTIAL_FAMILIES = {
    "stripe": _joined(st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
                      st.text(ALNUM, min_size=8, max_size=99)),
    "github": _joined(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), st.text(ALNUM, min_size=36,
                                                                                      max_size=40)),
    "github_pat": _joined(st.just("github_pat_"), st.text(ALNUM + "_", min_size=22, max_size=93)),
    "slack": _joined(st.sampled_from(["xoxb-", "xoxp-", "xoxa-2-", "xoxs-", "xoxr-", "xoxe.xoxp-1-", "xapp-1-"]),
                     st.text(ALNUM + "-", min_size=10, max_size=60)),
    "gitlab": _joined(st.just("glpat-"), st.text(BASE64URL, min_size=20, max_size=20)),
    "google": _joined(st.just("AIza"), st.text(BASE64URL, min_size=35, max_size=35)),
    "jwt": st.tuples(*(st.text(BASE64URL, min_size=size, max_size=80) for size in (4, 4, 0))).map(
        lambda parts: "eyJ" + ".".join(parts)),
}


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
    known_key=st.sampled_from(sorted(CREDENTIAL_FAMILIES)).flatmap(CREDENTIAL_FAMILIES.__getitem__),
)
def test_no_credential_reaches_the_audit_stream(
        harness: Harness, token_parts: tuple[str, str, str], api_key: str, cookie: str, query_secret: str,
        basic: str, use_valid_token: bool, include_query: bool, path_prefix: str, noise: dict[str, str],
        known_key: str) -> None:
    """Tokens (in Authorization, a cookie, the path, the user agent), API keys (also of known formats in the path
    and user agent), URL passwords, cookies and query secrets are never written, whatever else the request
    carries and even with credential headers allowlisted."""
    jwt_like = "eyJ{}.{}.{}".format(*token_parts)
    token = harness.valid_token if use_valid_token else jwt_like
    headers = {
        **noise,
        "authorization": f"Bearer {token}",
        "proxy-authorization": f"Basic {basic}",
        "cookie": f"session={cookie}; theme=dark",
        "x-api-key": api_key,
        "user-agent": f"{noise.get('user-agent', 'curl')} {jwt_like} {known_key}",
        "referer": f"https://admin:{basic}@app.example/cb?code={query_secret}&access_token={query_secret}",
    }
    path = (f"{path_prefix}/{jwt_like}/{known_key};jsessionid={cookie}"
            f"?access_token={query_secret}&api_key={api_key}&sig={query_secret}&page=2")
    text = harness.audit_text(check_request(path, headers=headers, request_id="r-1"), include_query)

    assert '"event":"decision"' in text
    leaked = [secret for secret in (*token_parts, api_key, cookie, query_secret, basic, harness.valid_token,
                                    harness.valid_token.split(".")[2], known_key) if secret in text]
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


#: Where a client puts a credential by mistake: (field, text before it, text after it).
PLACES = [
    ("path", "/v1/keys/", "/usage"), ("path", "/", ""), ("path", "/files/", "?download=1"),
    ("user-agent", "MyCLI/2.1 (", ") python-requests/2.31"), ("user-agent", "", " curl/8.5.0"),
    ("referer", "https://app.example/callback/", "/done"), ("x-custom", "", ""), ("x-custom", "key=", ";v=2"),
]


@st.composite
def percent_spelled(draw: st.DrawFn, text: str) -> str:
    """`text` with any of its characters percent-encoded (either hex case), up to twice over (`%255F`)."""
    for _ in range(draw(st.integers(0, 2))):
        encode = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
        upper = draw(st.booleans())
        text = "".join((f"%{ord(char):02X}" if upper else f"%{ord(char):02x}") if chosen else char
                       for char, chosen in zip(text, encode, strict=True))
    return text


def fully_decoded(text: str) -> str:
    for _ in range(5):
        text = urllib.parse.unquote(text)
    return text


def scrubbed_field(redactor: Redactor, field: str, text: str) -> str:
    event = {"path": text} if field == "path" else {"headers": {field: text}}
    event = redactor.scrub(event)
    return event["path"] if field == "path" else event["headers"][field]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), family=st.sampled_from(sorted(CREDENTIAL_FAMILIES)), place=st.sampled_from(PLACES))
def test_credentials_of_every_known_family_are_masked_whole_wherever_and_however_they_are_sent(
        data: st.DataObject, family: str, place: tuple[str, str, str]) -> None:
    """A generated credential of each family, plain or percent-encoded, in a path, a user agent, a URL header or
    any allowlisted header, is replaced whole by one mask: nothing of it is left, even after decoding."""
    secret = data.draw(CREDENTIAL_FAMILIES[family], label="secret")
    sent = data.draw(percent_spelled(secret), label="sent")
    field, before, after = place
    redactor = Redactor(["user-agent", "referer", "x-custom"], include_query=True)
    written = scrubbed_field(redactor, field, f"{before}{sent}{after}")
    assert secret not in fully_decoded(written)
    assert written.startswith(f"{before}{MASK}")
    assert after.endswith(written[len(before) + len(MASK):])  # only the mask between what surrounded it


@settings(max_examples=100, deadline=None)
@given(data=st.data(), family=st.sampled_from(sorted(CREDENTIAL_FAMILIES)),
       padding=st.sampled_from([0, SCRUB_CACHE_MAX_TEXT - 120, SCRUB_CACHE_MAX_TEXT, 4 * SCRUB_CACHE_MAX_TEXT]))
def test_a_text_seen_again_or_too_long_for_the_cache_is_masked_the_same_way(
        data: st.DataObject, family: str, padding: int) -> None:
    """The scrub caches short texts: the second scrub of a text (a cache hit) and a text past the cache's length
    limit (never cached) mask a credential exactly as the first scrub of a short one does."""
    secret = data.draw(CREDENTIAL_FAMILIES[family], label="secret")
    text = f"/{'a' * padding}/{data.draw(percent_spelled(secret), label='sent')}/usage"
    redactor = Redactor()
    first, again = (scrubbed_field(redactor, "path", text) for _ in range(2))
    assert first == again == scrubbed_field(Redactor(), "path", text)
    assert secret not in fully_decoded(first) and MASK in first


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["https", "http", "HTTPS", "ftp", "redis", "postgres", "amqps", "git+ssh", "wss"]),
       slashes=st.sampled_from(["//", "\\\\", "/\\", "", "/", "///"]),
       user=st.text(ALNUM + "-._~!$&'()*+,;=%", max_size=16).map("zu".__add__),
       password=st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"], exclude_characters="/?#\\"),
                        min_size=1, max_size=30).map("zq".__add__),
       header=st.sampled_from(["referer", "origin", "location", "x-forwarded-url", "x-custom", "user-agent"]))
def test_userinfo_in_any_url_valued_header_is_masked(scheme: str, slashes: str, user: str, password: str,
                                                     header: str) -> None:
    """`scheme://user:password@host` (any scheme, the slash spellings URL parsers accept, passwords holding `@`,
    `:` or escapes) keeps its scheme and host and loses its user and password, in every header."""
    redactor = Redactor(["referer", "origin", "location", "x-forwarded-url", "x-custom", "user-agent"])
    written = scrubbed_field(redactor, header, f"{scheme}:{slashes}{user}:{password}@db.example:5432/app")
    assert written == f"{scheme}:{slashes}{MASK}@db.example:5432/app"


def test_extra_redact_patterns_from_the_config_are_masked_too(tmp_path: Path) -> None:
    """`audit.redact_patterns` adds the operator's own credential shapes to the built-in ones."""
    path = tmp_path / "extauth.yaml"
    path.write_text("policy: {path: p.yaml}\naudit:\n  redact_patterns: ['acme_[0-9a-f]{16}']\n")
    (tmp_path / "p.yaml").touch()
    audit = load_config(path).audit
    redactor = Redactor(["user-agent"], redact_patterns=audit.redact_patterns)
    event = redactor.scrub({"path": "/x/acme_0123456789abcdef/y/sk_live_abcdefghij",
                            "headers": {"user-agent": "bot acme_0123456789abcdef"}})
    assert event == {"path": f"/x/{MASK}/y/{MASK}", "headers": {"user-agent": f"bot {MASK}"}}


@pytest.mark.parametrize(("pattern", "message"), [
    ("acme_[", "invalid regular expression"), ("x*", "matches the empty string"),
    ("(sk_[a-z0-9]+[0-9]*)+!", "may backtrack catastrophically")])
def test_unusable_redact_pattern_is_a_config_error_naming_its_line(tmp_path: Path, pattern: str,
                                                                   message: str) -> None:
    """A pattern that does not compile, matches nothing at all, or may backtrack catastrophically over client
    text is refused at load with file and line."""
    path = tmp_path / "extauth.yaml"
    path.write_text(f"policy: {{path: p.yaml}}\naudit:\n  redact_patterns:\n    - '{pattern}'\n")
    with pytest.raises(ConfigError, match=rf"extauth.yaml:4: audit.redact_patterns\[0\]: {message}"):
        load_config(path)
