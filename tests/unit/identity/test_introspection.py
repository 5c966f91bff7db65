"""Token introspection (RFC 7662) against a real local endpoint: what an answer must say to be accepted, how
answers are cached, shared and bounded, what an outage answers, and where the client secret never appears."""

import asyncio
import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.identity_helpers import AUDIENCE, ISSUER, NOW, Keys, Mint, ProviderFactory
from support.introspection_endpoint import CLIENT_ID, CLIENT_SECRET, IntrospectionEndpoint

from extauth.clock import ManualClock
from extauth.config.schema import AuthenticationConfig, IntrospectionConfig
from extauth.decision import Decision
from extauth.identity.authenticator import Authenticator
from extauth.identity.http import UrllibFetcher
from extauth.identity.identities import Identities
from extauth.identity.introspection import Introspector, is_jws_shaped
from extauth.identity.principal import AuthenticationError
from extauth.reasons import Reason

OPAQUE = "opaque-token-alice"
IDP_ISSUER = "https://login.example"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[IntrospectionEndpoint]:
    server = IntrospectionEndpoint()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh(endpoint: IntrospectionEndpoint) -> None:
    endpoint.answers.clear()
    endpoint.calls.clear()
    endpoint.client_auth.clear()
    endpoint.failing = False
    endpoint.delay_seconds = 0.0
    endpoint.redirect_to = None


def active(**overrides: Any) -> dict[str, Any]:
    answer = {"active": True, "sub": "alice", "iss": IDP_ISSUER, "aud": [AUDIENCE], "exp": NOW + 600,
              "roles": ["reader"], "client_id": "web"}
    return {name: value for name, value in {**answer, **overrides}.items() if value is not None}


def settings_for(endpoint: IntrospectionEndpoint, **overrides: Any) -> IntrospectionConfig:
    fields = {"name": "idp", "url": endpoint.url, "issuer": IDP_ISSUER, "audiences": [AUDIENCE],
              "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "roles_claim": "roles", **overrides}
    return IntrospectionConfig(**{name: value for name, value in fields.items() if value is not None})


Events = list[tuple[str, dict[str, Any]]]


def introspector(config: IntrospectionConfig, clock: ManualClock, events: Events | None = None,
                 fetcher: Any = None) -> Introspector:
    def notify(event: str, **fields: Any) -> None:
        if events is not None:
            events.append((event, fields))

    return Introspector(config, clock, fetcher or UrllibFetcher(), Identities([config], 1024), notify)


async def refusal(introspector: Introspector, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await introspector.authenticate(token)
    return caught.value


class AnswerFetcher:
    """Answers every POST with one fixed body, in process: for property tests over many answers."""

    def __init__(self, answer: object) -> None:
        self.body = json.dumps(answer).encode()
        self.posts = 0

    async def post(self, url: str, form: Mapping[str, str], **_: object) -> bytes:
        self.posts += 1
        return self.body


async def test_an_active_answer_becomes_a_qualified_principal_with_its_trusted_roles(
        endpoint: IntrospectionEndpoint, clock: ManualClock) -> None:
    """The subject is qualified by the introspection name, roles come from `roles_claim`, and extauth proved its
    client credentials with HTTP Basic by default."""
    endpoint.answers[OPAQUE] = active()
    principal = await introspector(settings_for(endpoint), clock).authenticate(OPAQUE)
    assert (principal.identity, principal.issuer, principal.provider) == ("idp:alice", IDP_ISSUER, "idp")
    assert principal.roles == {"reader"} and principal.expires_at == NOW + 600
    assert endpoint.client_auth == ["basic"]


async def test_client_secret_post_sends_the_credentials_in_the_form(endpoint: IntrospectionEndpoint,
                                                                    clock: ManualClock) -> None:
    """With `client_auth: client_secret_post` the endpoint sees the credentials in the form instead."""
    endpoint.answers[OPAQUE] = active()
    await introspector(settings_for(endpoint, client_auth="client_secret_post"), clock).authenticate(OPAQUE)
    assert endpoint.client_auth == ["post"]


async def test_an_inactive_answer_is_401_and_is_cached_only_briefly(endpoint: IntrospectionEndpoint,
                                                                    clock: ManualClock) -> None:
    """`active: false` is 401 `inactive_token`; asked again within `negative_cache_seconds` the endpoint is not
    called, after it it is."""
    checker = introspector(settings_for(endpoint, negative_cache_seconds=5), clock)
    assert (await refusal(checker, OPAQUE)).reason is Reason.INACTIVE_TOKEN
    assert (await refusal(checker, OPAQUE)).reason is Reason.INACTIVE_TOKEN
    assert endpoint.calls[OPAQUE] == 1
    clock.advance(6)
    await refusal(checker, OPAQUE)
    assert endpoint.calls[OPAQUE] == 2
    assert Decision.deny(Reason.INACTIVE_TOKEN, "x").status == 401


async def test_active_answers_are_reused_until_the_cache_period_ends(endpoint: IntrospectionEndpoint,
                                                                     clock: ManualClock) -> None:
    """Within `cache_seconds` one call serves every Check with the token (the endpoint's hit counter stays 1)."""
    endpoint.answers[OPAQUE] = active()
    checker = introspector(settings_for(endpoint, cache_seconds=60), clock)
    for _ in range(5):
        await checker.authenticate(OPAQUE)
    assert endpoint.calls[OPAQUE] == 1 and checker.stats.cache_hits == 4
    clock.advance(61)
    await checker.authenticate(OPAQUE)
    assert endpoint.calls[OPAQUE] == 2


async def test_a_cached_answer_never_outlives_the_tokens_exp(endpoint: IntrospectionEndpoint,
                                                             clock: ManualClock) -> None:
    """A token expiring before `cache_seconds` is asked about again after its `exp`, and is then refused."""
    endpoint.answers[OPAQUE] = active(exp=NOW + 10)
    checker = introspector(settings_for(endpoint, cache_seconds=600, leeway_seconds=0), clock)
    await checker.authenticate(OPAQUE)
    clock.advance(11)
    assert (await refusal(checker, OPAQUE)).reason is Reason.TOKEN_EXPIRED
    assert endpoint.calls[OPAQUE] == 2


async def test_refused_answers_cannot_evict_active_ones(endpoint: IntrospectionEndpoint, clock: ManualClock) -> None:
    """A flood of made-up tokens fills the negative cache only: the active answer is still served from cache."""
    endpoint.answers[OPAQUE] = active()
    checker = introspector(settings_for(endpoint, cache_size=1, negative_cache_size=2), clock)
    await checker.authenticate(OPAQUE)
    for index in range(10):
        await refusal(checker, f"made-up-{index}")
    await checker.authenticate(OPAQUE)
    assert endpoint.calls[OPAQUE] == 1


async def test_concurrent_checks_with_one_token_make_one_call(endpoint: IntrospectionEndpoint,
                                                              clock: ManualClock) -> None:
    """Twenty Checks arriving while the endpoint is slow share its single answer."""
    endpoint.answers[OPAQUE] = active()
    endpoint.delay_seconds = 0.2
    checker = introspector(settings_for(endpoint), clock)
    principals = await asyncio.gather(*(checker.authenticate(OPAQUE) for _ in range(20)))
    assert endpoint.calls[OPAQUE] == 1 and checker.stats.joined == 19
    assert {principal.identity for principal in principals} == {"idp:alice"}


async def test_an_endpoint_that_fails_answers_503_and_opens_the_breaker(endpoint: IntrospectionEndpoint,
                                                                         clock: ManualClock) -> None:
    """Errors are 503 `introspection_unavailable`; after `failure_threshold` of them the endpoint is not called
    until the cool-down ends, when one probe closes the breaker again; both transitions are audited."""
    endpoint.answers[OPAQUE] = active()
    endpoint.failing = True
    events: list[tuple[str, dict[str, Any]]] = []
    checker = introspector(settings_for(endpoint, breaker={"failure_threshold": 2, "cooldown_seconds": 5}), clock,
                           events)
    for index in range(4):
        error = await refusal(checker, f"token-{index}")
        assert error.reason is Reason.INTROSPECTION_UNAVAILABLE
    assert endpoint.hits == 2 and checker.stats.errors == {"http": 2, "breaker_open": 2}
    assert Decision.deny(error.reason, error.description).status == 503
    endpoint.failing = False
    clock.advance(5)
    assert (await checker.authenticate(OPAQUE)).identity == "idp:alice"
    assert [event for event, _ in events] == ["introspection_unavailable", "introspection_recovered"]


async def test_a_slow_endpoint_times_out_as_unavailable(endpoint: IntrospectionEndpoint, clock: ManualClock) -> None:
    """No answer within `timeout_seconds` is 503, counted as a timeout."""
    endpoint.answers[OPAQUE] = active()
    endpoint.delay_seconds = 0.5
    checker = introspector(settings_for(endpoint, timeout_seconds=0.1), clock)
    assert (await refusal(checker, OPAQUE)).reason is Reason.INTROSPECTION_UNAVAILABLE
    assert checker.stats.errors["timeout"] == 1


async def test_a_redirect_is_not_followed(endpoint: IntrospectionEndpoint, clock: ManualClock) -> None:
    """A redirect would carry the token and the client secret elsewhere: it is an outage, and its target is
    never called."""
    target = IntrospectionEndpoint()
    try:
        endpoint.redirect_to = target.url
        checker = introspector(settings_for(endpoint), clock)
        assert (await refusal(checker, OPAQUE)).reason is Reason.INTROSPECTION_UNAVAILABLE
        assert target.hits == 0
    finally:
        target.stop()


async def test_the_client_secret_appears_in_no_log_error_event_or_config_text(
        endpoint: IntrospectionEndpoint, clock: ManualClock, tmp_path: Path) -> None:
    """Wrong credentials, an outage and a refusal are logged, raised and audited without the secret (nor the
    token); the loaded config's repr does not show it either."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret-value\n")
    config = settings_for(endpoint, client_secret=None, client_secret_file=str(secret_file),
                          breaker={"failure_threshold": 1, "cooldown_seconds": 1})
    assert config.client_secret == "wrong-secret-value"
    events: list[tuple[str, dict[str, Any]]] = []
    checker = introspector(config, clock, events)
    with structlog.testing.capture_logs() as logs:
        errors = [await refusal(checker, OPAQUE)]
        endpoint.failing = True
        clock.advance(2)
        errors.append(await refusal(checker, OPAQUE))
    text = repr(logs) + repr(events) + repr(config) + "".join(f"{error} {error.description}" for error in errors)
    assert logs and events
    assert "wrong-secret-value" not in text and OPAQUE not in text
    assert base64.b64encode(b"extauth:wrong-secret-value").decode() not in text


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.none(), st.booleans().filter(lambda value: not value), st.integers(), st.text(max_size=5),
                 st.just("true"), st.lists(st.booleans(), max_size=2)))
async def test_only_the_json_true_is_active(clock: ManualClock, flag: Any) -> None:
    """`active` must be the JSON `true`: "true", 1, [true], null or a missing member are all inactive."""
    answer = active(active=flag) if flag is not None else {key: value for key, value in active().items()
                                                            if key != "active"}
    checker = introspector(IntrospectionConfig(name="idp", url="https://login.example/introspect", issuer=IDP_ISSUER,
                                               audiences=[AUDIENCE], client_id="x", client_secret="y"),
                           clock, fetcher=AnswerFetcher(answer))
    assert (await refusal(checker, "t")).reason is Reason.INACTIVE_TOKEN


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["iss", "aud", "sub", "exp", "token_use"]), st.data())
async def test_an_answer_failing_any_check_is_refused(clock: ManualClock, member: str, data: st.DataObject) -> None:
    """A wrong issuer, an audience naming none of ours (in any shape), no subject, a past `exp`, or a refresh
    token is refused with its own reason, whatever the other members say."""
    values = {
        "iss": (st.sampled_from([ISSUER, IDP_ISSUER + "/", IDP_ISSUER.upper(), ""]), Reason.INVALID_ISSUER),
        "aud": (st.one_of(st.none(), st.just(AUDIENCE.upper()), st.lists(st.sampled_from(["other", "api ", 1]),
                                                                        max_size=3), st.integers()),
                Reason.INVALID_AUDIENCE),
        "sub": (st.one_of(st.none(), st.just(""), st.integers(), st.lists(st.text(), max_size=1)),
                Reason.MISSING_CLAIM),
        "exp": (st.floats(min_value=0, max_value=NOW - 31), Reason.TOKEN_EXPIRED),
        "token_use": (st.sampled_from(["refresh_token", "id_token", "", "Access_Token"]), Reason.INACTIVE_TOKEN),
    }
    strategy, expected = values[member]
    answer = active(**{member: data.draw(strategy)})
    if member in ("aud", "sub") and answer.get(member) is None:
        answer.pop(member, None)
    checker = introspector(IntrospectionConfig(name="idp", url="https://login.example/introspect", issuer=IDP_ISSUER,
                                               audiences=[AUDIENCE], client_id="x", client_secret="y"),
                           clock, fetcher=AnswerFetcher(answer))
    assert (await refusal(checker, "t")).reason is expected


def jws_shaped(header: dict[str, Any], rest: str) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
    return f"{encoded}.{rest}"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
       st.from_regex(r"[A-Za-z0-9_-]{0,12}\.[A-Za-z0-9_-]{0,12}", fullmatch=True))
async def test_a_jwt_shaped_token_is_never_posted_to_the_endpoint(clock: ManualClock, header: dict[str, Any],
                                                                  rest: str) -> None:
    """Whatever its claims, issuer or signature, a token that presents itself as a JWT is judged as one (here:
    refused) and never reaches the introspection endpoint."""
    token = jws_shaped(header, rest)
    fetcher = AnswerFetcher(active())
    config = AuthenticationConfig(introspection={"name": "idp", "url": "https://login.example/introspect",
                                                 "issuer": IDP_ISSUER, "audiences": [AUDIENCE], "client_id": "x",
                                                 "client_secret": "y"})
    authenticator = Authenticator(config, clock, fetcher)  # type: ignore[arg-type]
    assert is_jws_shaped(token)
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate({"authorization": f"Bearer {token}"})
    assert fetcher.posts == 0


async def test_a_signed_jwt_of_an_unknown_issuer_is_not_introspected(clock: ManualClock, keys: Keys, mint: Mint,
                                                                     provider: ProviderFactory) -> None:
    """A valid JWT from an issuer nobody configured stays 401 `unknown_issuer`; an opaque token beside it is
    introspected."""
    fetcher = AnswerFetcher(active())
    config = AuthenticationConfig(providers=[provider()], introspection={
        "name": "opaque", "url": "https://login.example/introspect", "issuer": IDP_ISSUER, "audiences": [AUDIENCE],
        "client_id": "x", "client_secret": "y"})
    authenticator = Authenticator(config, clock, fetcher)  # type: ignore[arg-type]
    token = mint(keys.rsa, "RS256", iss="https://elsewhere.example")
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate({"authorization": f"Bearer {token}"})
    assert caught.value.reason is Reason.UNKNOWN_ISSUER and fetcher.posts == 0
    principal = await authenticator.authenticate({"authorization": "Bearer some-opaque-value"})
    assert principal is not None and principal.identity == "opaque:alice" and fetcher.posts == 1


@pytest.mark.parametrize("clash", [{"name": "idp"}, {"issuer": ISSUER}, {"name": "apikey"}, {"primary": True}])
def test_introspection_may_not_share_a_name_issuer_or_primacy(provider: ProviderFactory, clash: dict[str, Any],
                                                              tmp_path: Path) -> None:
    """An introspected identity must never read as a JWT provider's or an API key's."""
    store = tmp_path / "keys.yaml"
    store.write_text("")
    introspection = {"name": "opaque", "url": "https://login.example/introspect", "issuer": IDP_ISSUER,
                     "audiences": [AUDIENCE], "client_id": "x", "client_secret": "y", **clash}
    with pytest.raises(ValueError, match="introspection"):
        AuthenticationConfig(providers=[provider()], api_keys={"store": store}, introspection=introspection)


@pytest.mark.parametrize("url", ["http://login.example/introspect", "https://user@login.example/x", "ftp://x/y"])
def test_the_endpoint_must_be_https_except_on_loopback(url: str) -> None:
    """The token and the client secret travel to this URL: plain http only to this host."""
    with pytest.raises(ValueError, match="url"):
        IntrospectionConfig(name="idp", url=url, issuer=IDP_ISSUER, audiences=[AUDIENCE], client_id="x",
                            client_secret="y")


def test_a_client_secret_is_required() -> None:
    """Without a secret there is no client authentication: a load error, not an anonymous call."""
    with pytest.raises(ValueError, match="client_secret"):
        IntrospectionConfig(name="idp", url="https://login.example/i", issuer=IDP_ISSUER, audiences=[AUDIENCE],
                            client_id="x")


