"""`preset: kubernetes`: projected service-account tokens, shaped as the API server issues them and signed by a
test issuer found by OIDC discovery, become principals with `namespace/name`; a `service_accounts:` rule tells
service accounts apart; legacy secret-based tokens and tokens whose claims disagree are refused."""

import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.identity_helpers import NOW, Keys, jwks_document, public_jwk

from extauth.clock import ManualClock
from extauth.conditions.compiler import compile_condition
from extauth.config.schema import AuthenticationConfig, JwtProviderConfig
from extauth.documents.policy import Condition
from extauth.identity.authenticator import Authenticator
from extauth.identity.http import StaticFetcher
from extauth.identity.principal import AuthenticationError, Principal
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request

CLUSTER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "orders-api"


def cluster_provider(**overrides: Any) -> JwtProviderConfig:
    return JwtProviderConfig(**{"name": "cluster", "preset": "kubernetes", "issuer": CLUSTER,
                                "audiences": [AUDIENCE], **overrides})


@pytest.fixture
async def authenticator(keys: Keys, clock: ManualClock) -> AsyncIterator[Authenticator]:
    """The preset provider, its keys found by discovery of the test issuer."""
    fetcher = StaticFetcher({
        f"{CLUSTER}/.well-known/openid-configuration": json.dumps(
            {"issuer": CLUSTER, "jwks_uri": f"{CLUSTER}/openid/v1/jwks"}).encode(),
        f"{CLUSTER}/openid/v1/jwks": jwks_document(public_jwk(keys.rsa, "cluster-key")),
    })
    authenticator = Authenticator(AuthenticationConfig(providers=[cluster_provider()]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    yield authenticator
    await authenticator.stop()


def projected(keys: Keys, namespace: str = "billing", name: str = "invoicer", **overrides: Any) -> str:
    """A token as the API server's TokenRequest issues it for a pod."""
    claims = {
        "aud": [AUDIENCE], "exp": NOW + 3600, "iat": NOW, "nbf": NOW, "iss": CLUSTER,
        "kubernetes.io": {"namespace": namespace,
                          "pod": {"name": f"{name}-7d4b9c-x2x7q", "uid": "0b3c1c9e-7a0f-4f43-9f35-3e3d1b0f5a11"},
                          "serviceaccount": {"name": name, "uid": "5c9a1c5e-1f0e-4a57-8e2f-4c4f2b8e7d21"}},
        "sub": f"system:serviceaccount:{namespace}:{name}",
        **overrides,
    }
    claims = {key: value for key, value in claims.items() if value is not None}
    return jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": "cluster-key"})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def refused(authenticator: Authenticator, token: str) -> Reason:
    with pytest.raises(AuthenticationError) as caught:
        await authenticator.authenticate(bearer(token))
    return caught.value.reason


async def test_a_projected_token_maps_to_namespace_and_service_account(authenticator: Authenticator,
                                                                       keys: Keys) -> None:
    """The principal carries `billing/invoicer` and the provider-qualified `sub`."""
    principal = await authenticator.authenticate(bearer(projected(keys)))
    assert principal is not None
    assert principal.service_account == "billing/invoicer"
    assert principal.identity == "cluster:system:serviceaccount:billing:invoicer"


async def test_a_token_for_another_audience_is_refused(authenticator: Authenticator, keys: Keys) -> None:
    """A token the pod requested for another service does not work here."""
    assert await refused(authenticator, projected(keys, aud=["vault"])) is Reason.INVALID_AUDIENCE


@pytest.mark.parametrize("missing", ["exp", "aud", "iat", "kubernetes.io"])
async def test_the_preset_requires_the_claims_every_projected_token_has(authenticator: Authenticator, keys: Keys,
                                                                        missing: str) -> None:
    """Without `exp`, `aud`, `iat` or `kubernetes.io` a token is not a projected token."""
    assert await refused(authenticator, projected(keys, **{missing: None})) is Reason.MISSING_CLAIM


async def test_a_legacy_secret_based_token_is_refused(authenticator: Authenticator, keys: Keys) -> None:
    """The old shape (issuer `kubernetes/serviceaccount`, flat claims, no exp, no aud) never expires: refused."""
    legacy = jwt.encode({"iss": "kubernetes/serviceaccount",
                         "kubernetes.io/serviceaccount/namespace": "billing",
                         "kubernetes.io/serviceaccount/secret.name": "invoicer-token-abcde",
                         "kubernetes.io/serviceaccount/service-account.name": "invoicer",
                         "kubernetes.io/serviceaccount/service-account.uid": "5c9a1c5e",
                         "sub": "system:serviceaccount:billing:invoicer"},
                        keys.rsa, algorithm="RS256", headers={"kid": "cluster-key"})
    assert await refused(authenticator, legacy) is Reason.UNKNOWN_ISSUER


async def test_a_legacy_token_is_refused_even_under_its_own_issuer(keys: Keys, clock: ManualClock) -> None:
    """Configuring the legacy issuer does not help: the preset's required claims are missing."""
    fetcher = StaticFetcher({"https://legacy.example/jwks": jwks_document(public_jwk(keys.rsa, "cluster-key"))})
    provider = cluster_provider(issuer="kubernetes/serviceaccount", jwks={"url": "https://legacy.example/jwks"})
    authenticator = Authenticator(AuthenticationConfig(providers=[provider]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    legacy = jwt.encode({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:billing:invoicer",
                         "kubernetes.io/serviceaccount/namespace": "billing"},
                        keys.rsa, algorithm="RS256", headers={"kid": "cluster-key"})
    assert await refused(authenticator, legacy) is Reason.MISSING_CLAIM
    await authenticator.stop()


_NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
async def test_claims_that_name_no_valid_or_consistent_service_account_are_refused(
        authenticator: Authenticator, keys: Keys, data: st.DataObject) -> None:
    """Another spelling of a namespace or name (case, `/`, `:`, a trailing newline, a non-string), or a `sub` that
    names someone else, is 401 `invalid_service_account`: a signed token still names exactly one account."""
    namespace, name = data.draw(_NAMES), data.draw(_NAMES)
    tamper = data.draw(st.sampled_from(["namespace", "name", "sub", "shape"]))
    bad_spelling = st.sampled_from(["Billing", "billing/x", "a:b", "billing\n", "", " billing", "x" * 64, "bil ling"])
    info: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": name}}
    sub = f"system:serviceaccount:{namespace}:{name}"
    if tamper == "namespace":
        info["namespace"] = data.draw(st.one_of(bad_spelling, st.integers(), st.none()))
    elif tamper == "name":
        info["serviceaccount"] = {"name": data.draw(st.one_of(bad_spelling, st.integers()))}
    elif tamper == "sub":
        sub = data.draw(st.sampled_from([f"system:serviceaccount:{namespace}:{name}x", f"system:serviceaccount:{name}",
                                         f"system:serviceaccount:other:{name}", name]))
    else:
        info = data.draw(st.sampled_from([{"namespace": namespace}, {"serviceaccount": name}, {}]))
    reason = await refused(authenticator, projected(keys, namespace, name, sub=sub, **{"kubernetes.io": info}))
    assert reason is Reason.INVALID_SERVICE_ACCOUNT


async def test_only_the_preset_sets_a_service_account(keys: Keys, clock: ManualClock) -> None:
    """Another issuer's token carrying a `kubernetes.io` claim names no service account."""
    fetcher = StaticFetcher({"https://idp.example/jwks": jwks_document(public_jwk(keys.rsa, "cluster-key"))})
    provider = JwtProviderConfig(name="idp", issuer=CLUSTER, audiences=[AUDIENCE],
                                 jwks={"url": "https://idp.example/jwks"})
    authenticator = Authenticator(AuthenticationConfig(providers=[provider]), clock, fetcher)
    with capture_logs():
        await authenticator.start()
    principal = await authenticator.authenticate(bearer(projected(keys)))
    assert principal is not None and principal.service_account is None
    await authenticator.stop()


def test_the_preset_finds_keys_by_discovery_and_refuses_a_shared_secret(tmp_path: Any) -> None:
    """Discovery and the projected-token claims are the defaults; an HMAC secret cannot be the API server's key."""
    provider = cluster_provider()
    assert provider.jwks is not None and provider.jwks.oidc_discovery
    assert {"exp", "iat", "sub", "aud", "kubernetes.io"} <= set(provider.required_claims)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    with pytest.raises(ValueError, match="shared_secret_file"):
        cluster_provider(shared_secret_file=secret, algorithms=["HS256"])


def allowed_by(condition: Condition, principal: Principal, clock: ManualClock) -> bool:
    checks = compile_condition(condition, {}, clock, deny=False, source="test")
    request = Request(check_request("/x"))
    return all(check.test(request, principal, {}) for check in checks)


async def test_a_rule_on_billing_invoicer_allows_it_and_no_other_account(authenticator: Authenticator, keys: Keys,
                                                                         clock: ManualClock) -> None:
    """`service_accounts: [billing/invoicer]` holds for that account only; `billing/*` for its namespace."""
    exact, namespace = Condition(service_accounts=["billing/invoicer"]), Condition(service_accounts=["billing/*"])
    results = {}
    for account in ("billing/invoicer", "billing/auditor", "ops/invoicer"):
        ns, name = account.split("/")
        principal = await authenticator.authenticate(bearer(projected(keys, ns, name)))
        assert principal is not None
        results[account] = (allowed_by(exact, principal, clock), allowed_by(namespace, principal, clock))
    assert results == {"billing/invoicer": (True, True), "billing/auditor": (False, True),
                       "ops/invoicer": (False, False)}
