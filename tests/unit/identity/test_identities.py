"""Identities across issuers: qualified unless primary, never equal for different callers, never sanitised."""

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.identity_helpers import JWKS_URL, Keys, Mint, ProviderFactory, jwks_document, public_jwk

from extauth.clock import ManualClock
from extauth.conditions.compiler import compile_condition
from extauth.config import ConfigError, load_config
from extauth.config.schema import AuthenticationConfig, JwksConfig, JwtProviderConfig
from extauth.documents.policy import Condition
from extauth.identity.authenticator import Authenticator
from extauth.identity.http import StaticFetcher
from extauth.identity.identities import Identities
from extauth.identity.principal import AuthenticationError, Principal
from extauth.reasons import Reason
from extauth.request import Request
from extauth.respond import sanitize_header_value
from extauth.tools.synthetic import check_request


def config(name: str, primary: bool = False, **fields: Any) -> JwtProviderConfig:
    return JwtProviderConfig(name=name, issuer=f"https://{name}.example", audiences=["api"],
                             jwks=JwksConfig(url=f"https://{name}.example/jwks"), primary=primary, **fields)


CORP, PARTNER, PARTNER2 = config("corp", primary=True), config("partner"), config("partner.2")
IDENTITIES = Identities([CORP, PARTNER, PARTNER2], max_bytes=64)

#: Subjects built to collide: provider-name prefixes in any case, separators, and arbitrary text.
SUBJECTS = st.one_of(
    st.text(max_size=20),
    st.builds(lambda prefix, separator, rest: prefix + separator + rest,
              st.sampled_from(["partner", "PARTNER", "Partner", "partner.2", "corp", "partner.", ""]),
              st.sampled_from([":", "::", "/", "@", ""]), st.text(max_size=10)),
)


def identity_or_none(provider: JwtProviderConfig, subject: str) -> str | None:
    try:
        return IDENTITIES.of(provider, subject)
    except AuthenticationError as error:
        assert error.reason is Reason.INVALID_SUBJECT
        return None


@given(st.sampled_from([CORP, PARTNER, PARTNER2]), SUBJECTS, st.sampled_from([CORP, PARTNER, PARTNER2]), SUBJECTS)
def test_two_accepted_identities_are_equal_only_for_the_same_provider_and_subject(
        first: JwtProviderConfig, first_subject: str, second: JwtProviderConfig, second_subject: str) -> None:
    """Equal identities (even ignoring case) mean the same provider and the same `sub`: no issuer can mint a
    subject that reads as another issuer's user."""
    one, other = identity_or_none(first, first_subject), identity_or_none(second, second_subject)
    if one is not None and other is not None and one.lower() == other.lower():
        assert first.name == second.name and first_subject.lower() == second_subject.lower()


@given(st.sampled_from([CORP, PARTNER]), st.text(max_size=80))
def test_an_accepted_identity_is_one_sanitising_would_not_change(provider: JwtProviderConfig, subject: str) -> None:
    """Whatever the `sub`, either it is refused with invalid_subject or the identity goes upstream byte for byte:
    no control characters, no surrounding whitespace, within the header size."""
    identity = identity_or_none(provider, subject)
    if identity is not None:
        assert sanitize_header_value(identity, 64) == identity
        assert identity.endswith(subject)


@pytest.mark.parametrize("subject", ["root\n", "ro\x00ot", "root\r\nx-admin: 1", "\x7froot", " root", "root ",
                                     "root\u00a0", "\u3000root", "\ud800", "r" * 65, "é" * 33])
def test_subjects_that_would_need_sanitising_are_refused(subject: str) -> None:
    """Control characters, surrounding (Unicode) whitespace, lone surrogates and over-long subjects are 401s."""
    with pytest.raises(AuthenticationError) as raised:
        IDENTITIES.of(CORP, subject)
    assert raised.value.reason is Reason.INVALID_SUBJECT


def test_the_qualified_identity_must_fit_the_header_too() -> None:
    """A partner subject that fits alone but not with its `partner:` prefix is refused, never truncated."""
    assert IDENTITIES.of(CORP, "r" * 64) == "r" * 64
    with pytest.raises(AuthenticationError, match="longer than 64 bytes"):
        IDENTITIES.of(PARTNER, "r" * 60)


def test_primary_subjects_are_plain_and_others_carry_their_provider_name() -> None:
    """corp `root` is `root`; partner `root` is `partner:root`; a corp subject with a colon that names no provider
    (a URN, a Kubernetes service account) stays as it is."""
    assert IDENTITIES.of(CORP, "root") == "root"
    assert IDENTITIES.of(PARTNER, "root") == "partner:root"
    assert IDENTITIES.of(PARTNER, "corp:root") == "partner:corp:root"
    assert IDENTITIES.of(CORP, "system:serviceaccount:shop:api") == "system:serviceaccount:shop:api"
    with pytest.raises(AuthenticationError, match="another provider's identity"):
        IDENTITIES.of(CORP, "Partner.2:root")


@pytest.fixture
def two_providers(provider: ProviderFactory, clock: ManualClock, keys: Keys) -> Authenticator:
    """corp (primary, the default `provider()`) and partner, both by JWKS URL with the same test key."""
    partner = provider(name="partner", issuer="https://partner.example", primary=False,
                       jwks=JwksConfig(url="https://partner.example/jwks"), groups_claim="teams")
    document = jwks_document(public_jwk(keys.rsa, "rsa-1"))
    fetcher = StaticFetcher({JWKS_URL: document, "https://partner.example/jwks": document})
    return Authenticator(AuthenticationConfig(providers=[provider(), partner]), clock, fetcher)


async def principal_of(authenticator: Authenticator, token: str) -> Principal:
    with capture_logs():
        await authenticator.start()
    try:
        principal = await authenticator.authenticate({"authorization": f"Bearer {token}"})
    finally:
        await authenticator.stop()
    assert principal is not None
    return principal


async def test_a_partner_token_gets_no_roles_and_only_its_trusted_groups(
        two_providers: Authenticator, mint: Mint, keys: Keys) -> None:
    """The partner trusts no roles claim and `teams` for groups: `roles`/`groups` in its tokens are ignored."""
    token = mint(keys.rsa, "RS256", iss="https://partner.example", sub="root", roles=["admin"], groups=["admins"],
                 teams=["blue"])
    principal = await principal_of(two_providers, token)
    assert (principal.identity, principal.subject) == ("partner:root", "root")
    assert (principal.roles, principal.groups) == (frozenset(), frozenset({"blue"}))


async def test_the_primary_token_reads_roles_and_groups_by_default(two_providers: Authenticator, mint: Mint,
                                                                   keys: Keys) -> None:
    """The primary provider trusts `roles` and `groups` without naming them."""
    principal = await principal_of(two_providers, mint(keys.rsa, "RS256", sub="root", roles=["admin"],
                                                       groups="Domain Admins"))
    assert (principal.identity, principal.roles, principal.groups) == ("root", {"admin"}, {"Domain Admins"})


async def test_a_primary_subject_shaped_like_a_partner_identity_is_a_401(two_providers: Authenticator, mint: Mint,
                                                                         keys: Keys) -> None:
    """A corp token with `sub: partner:root` cannot become the partner's root."""
    with pytest.raises(AuthenticationError) as raised:
        await principal_of(two_providers, mint(keys.rsa, "RS256", sub="partner:root"))
    assert raised.value.reason is Reason.INVALID_SUBJECT


ROLE_CLAIMS = [
    ({"roles": ["a", "b", 3, None]}, "roles", {"a", "b"}),
    ({"roles": "a b,c"}, "roles", {"a", "b", "c"}),
    ({"realm_access": {"roles": ["a"]}}, "realm_access.roles", {"a"}),
    ({"realm_access.roles": ["literal"], "realm_access": {"roles": ["nested"]}}, "realm_access.roles", {"literal"}),
    ({"https://example.com/roles": ["a"]}, "https://example.com/roles", {"a"}),
    ({"roles": {"a": True}}, "roles", set()),
    ({"realm_access": ["a"]}, "realm_access.roles", set()),
    ({"roles": ["a"]}, None, set()),
]


@pytest.mark.parametrize(("claims", "roles_claim", "roles"), ROLE_CLAIMS)
async def test_roles_are_read_from_the_configured_claim_in_any_shape(
        provider: ProviderFactory, clock: ManualClock, keys: Keys, mint: Mint, claims: dict[str, Any],
        roles_claim: str | None, roles: set[str]) -> None:
    """A list (its strings only), a space/comma separated string, a dotted path or a literal dotted name; a
    provider with `roles_claim: null` has no roles at all."""
    fetcher = StaticFetcher({JWKS_URL: jwks_document(public_jwk(keys.rsa, "rsa-1"))})
    authenticator = Authenticator(AuthenticationConfig(providers=[provider(roles_claim=roles_claim)]), clock,
                                  fetcher)
    assert (await principal_of(authenticator, mint(keys.rsa, "RS256", **claims))).roles == roles


def test_only_the_primary_provider_trusts_roles_and_groups_without_naming_them() -> None:
    """Defaults: primary reads `roles`/`groups`; others read nothing until configured; null switches it off."""
    assert (CORP.roles_claim, CORP.groups_claim) == ("roles", "groups")
    assert (PARTNER.roles_claim, PARTNER.groups_claim) == (None, None)
    assert config("x", primary=True, roles_claim=None).roles_claim is None
    assert config("y", roles_claim="partner_roles").roles_claim == "partner_roles"


PROVIDER = "    - name: {name}\n      issuer: {issuer}\n      audiences: [api]\n      jwks: {{file: j.json}}\n"
CONFIG_CASES = {
    "two primary providers": (
        PROVIDER.format(name="a", issuer="ia") + "      primary: true\n"
        + PROVIDER.format(name="b", issuer="ib") + "      primary: true\n",
        "3: authentication: only one provider may be primary; providers[0, 1] all are",
    ),
    "names equal but for case": (
        PROVIDER.format(name="partner", issuer="ia") + PROVIDER.format(name="Partner", issuer="ib"),
        "3: authentication: providers[1] has the same name as providers[0] ignoring case: 'Partner'",
    ),
    "primary as a string": (
        PROVIDER.format(name="a", issuer="ia") + "      primary: 'true'\n",
        "8: authentication.providers[0].primary: Input should be a valid boolean",
    ),
    "issuer with surrounding whitespace": (
        PROVIDER.format(name="a", issuer='"ia "'),
        "3: authentication: providers[0].issuer has leading or trailing whitespace, so it cannot be forwarded "
        "unchanged",
    ),
}


@pytest.mark.parametrize(("providers", "expected"), CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_ambiguous_identity_configurations_are_config_errors(tmp_path: Path, providers: str, expected: str) -> None:
    """Configurations under which two callers could share an identity fail at load with file and line."""
    path = tmp_path / "extauth.yaml"
    path.write_text("policy: {path: p.yaml}\nauthentication:\n  providers:\n" + providers)
    (tmp_path / "p.yaml").touch()
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}:{expected}"


def test_a_forwarded_header_may_carry_only_one_thing(tmp_path: Path) -> None:
    """The same header named for the subject and a claim would let a claim overwrite the subject: refused."""
    path = tmp_path / "extauth.yaml"
    path.write_text("policy: {path: p.yaml}\nauthentication:\n  forward:\n    roles_header: x-extauth-subject\n")
    with pytest.raises(ConfigError, match=r"named more than once: \['x-extauth-subject'\]"):
        load_config(path)



def _holds(when: Condition, principal: Principal) -> bool:
    checks = compile_condition(when, {}, ManualClock(), deny=False, source="test")
    request = Request(check_request("/x"))
    return all(check.test(request, principal, {}) for check in checks)


def _principal(provider: JwtProviderConfig, subject: str, claims: dict[str, Any]) -> Principal:
    return Principal(subject=subject, identity=IDENTITIES.of(provider, subject), issuer=provider.issuer,
                     provider=provider.name, key_id=None, roles=frozenset(), groups=frozenset({"team"}),
                     claims=MappingProxyType(claims), expires_at=None)


def test_policy_conditions_tell_issuers_apart() -> None:
    """`subjects: [root]` and CEL's `principal.identity` match corp's root only; `groups` reads the trusted groups,
    never a `groups` claim the provider is not trusted for."""
    corp_root = _principal(CORP, "root", {"groups": ["admins"]})
    partner_root = _principal(PARTNER, "root", {"groups": ["admins"]})
    assert _holds(Condition(subjects=["root"]), corp_root) and not _holds(Condition(subjects=["root"]), partner_root)
    assert _holds(Condition(subjects=["partner:root"]), partner_root)
    is_root = Condition(expression="principal.identity == 'root'")
    assert _holds(is_root, corp_root) and not _holds(is_root, partner_root)
    assert not _holds(Condition(groups=["admins"]), partner_root) and _holds(Condition(groups=["team"]), partner_root)
