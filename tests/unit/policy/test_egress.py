"""The egress allowlist (docs/egress.md): callers by verified SPIFFE ID, destinations by canonical host, decided
apart from ingress routes; every other spelling of an allowed host or caller that names something else is refused."""

import asyncio
import shutil
from pathlib import Path

import pytest
from google.rpc import code_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.audit.sink import MemorySink
from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.clock import ManualClock
from extauth.config.schema import AuthenticationConfig
from extauth.decision import Decision
from extauth.documents.errors import ConfigError
from extauth.identity.peer import parse_peer, verified_peer
from extauth.pipeline import Pipeline
from extauth.ratelimit import MemoryStorage, RateLimiter
from extauth.ratelimit.phase import RateLimitPhase
from extauth.reasons import Reason
from extauth.request import Request
from extauth.respond import Responder
from extauth.tools.policy_tests import run_policy_tests
from extauth.tools.synthetic import check_request

SHIPPED = Path(__file__).parents[3] / "envoy" / "policies"
CHECKOUT = "spiffe://cluster.local/ns/shop/sa/checkout"
BATCH = "spiffe://cluster.local/ns/batch/sa/nightly"
EGRESS = {"direction": "egress"}

POLICY = f"""\
apiVersion: extauth/v1
kind: Policy
metadata: {{name: out}}
routes:
  - name: anything-public
    match: {{path: {{prefix: /}}}}
    public: true
egress:
  - name: partner
    hosts: [api.partner.com]
    callers: [{CHECKOUT}]
    limits:
      - {{name: per-caller, key: [peer, host], windows: [{{requests: 2, per: 1m}}]}}
  - name: partner-regions
    hosts: ["*.regions.partner.com"]
    callers: ["spiffe://cluster.local/ns/shop/*"]
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    directory = tmp_path_factory.mktemp("egress")
    (directory / "out.yaml").write_text(POLICY)
    return compile_policy(directory, ManualClock(1_000_000))


def egress_decision(policy: CompiledPolicy, host: str, peer: str = CHECKOUT, path: str = "/v1/orders") -> Decision:
    """Screening, then the egress allowlist, as the pipeline runs them for a call the egress listener marks."""
    request = Request(check_request(path, host=host, peer=peer, context_extensions=EGRESS))
    return policy.screener.screen(request) or policy.egress.authorize(request)


def test_an_allowed_caller_reaches_an_allowed_host(policy: CompiledPolicy) -> None:
    """The listed caller calling the listed host is allowed by that destination entry."""
    decision = egress_decision(policy, "api.partner.com")
    assert (decision.allowed, decision.reason, decision.rule) == (True, Reason.OK, "out/egress/partner")


def test_an_unlisted_host_is_403_even_where_an_ingress_route_is_public(policy: CompiledPolicy) -> None:
    """No egress entry lists the host: 403, though a public ingress route matches the path (ingress never decides)."""
    decision = egress_decision(policy, "api.other.com")
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, Reason.NO_MATCHING_ROUTE)


@pytest.mark.parametrize("peer", [BATCH, "", "CN=checkout,O=shop", CHECKOUT + "/x/..", "spiffe://cluster.local/ns/shop"])
def test_a_caller_the_entry_does_not_list_is_403(policy: CompiledPolicy, peer: str) -> None:
    """Another workload, no certificate, a certificate without a SPIFFE ID, a non-canonical ID: 403 `forbidden`."""
    decision = egress_decision(policy, "api.partner.com", peer=peer)
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, Reason.FORBIDDEN)


def test_a_caller_prefix_covers_the_workloads_below_it(policy: CompiledPolicy) -> None:
    """`spiffe://cluster.local/ns/shop/*` admits every workload of that namespace, at any wildcard subdomain."""
    decision = egress_decision(policy, "eu.regions.partner.com", peer="spiffe://cluster.local/ns/shop/sa/cart")
    assert decision.rule == "out/egress/partner-regions"
    assert not egress_decision(policy, "regions.partner.com", peer="spiffe://cluster.local/ns/shop/sa/cart").allowed
    assert not egress_decision(policy, "eu.regions.partner.com", peer="spiffe://cluster.local/ns/shopx/sa/a").allowed


def test_an_ingress_request_is_never_decided_by_the_egress_allowlist(policy: CompiledPolicy) -> None:
    """Without the listener's `direction: egress`, a request to an egress host is an ordinary ingress request."""
    request = Request(check_request("/v1/orders", host="api.partner.com", peer=CHECKOUT))
    assert not request.is_egress
    assert policy.engine.authorize(request, None).rule == "out/anything-public"


# --- every spelling of an allowed host that names it is allowed; every spelling that names another host is not ---

_CASES = st.lists(st.booleans(), min_size=len("api.partner.com"), max_size=len("api.partner.com"))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(upper=_CASES, trailing_dot=st.booleans(), port=st.one_of(st.none(), st.integers(0, 65535)))
def test_spellings_of_an_allowed_host_are_that_host(policy: CompiledPolicy, upper: list[bool], trailing_dot: bool,
                                                    port: int | None) -> None:
    """Case, a trailing dot and a port do not change which host is called: the entry for it decides."""
    host = "".join(char.upper() if flip else char for char, flip in zip("api.partner.com", upper, strict=True))
    host += "." if trailing_dot else ""
    host += f":{port}" if port is not None else ""
    assert egress_decision(policy, host).rule == "out/egress/partner"


_OTHER_HOSTS = st.one_of(
    # another name that contains, extends or ends like the allowed one
    st.sampled_from(["api.partner.com.evil.com", "evil-api.partner.com", "apipartner.com", "partner.com",
                     "api.partner.co", "api.partner.com.", "x.api.partner.com", "api..partner.com", "api.partner.com..",
                     "regions.partner.com", "api.partner.com@evil.com", "evil.com#api.partner.com",
                     "evil.com/api.partner.com", "api.partner.com\\@evil.com", "api%2epartner.com",
                     "api.partner.com%00",
                     "api.partner.com:443:80", "api.partner.com:99999", "api.partner.com: 443", " api.partner.com"]),
    # IDNA: look-alikes and the punycode of other names
    st.sampled_from(["аpi.partner.com", "api.pаrtner.com", "api.partner.com\u200b", "ａｐｉ.partner.com",
                     "api.partner.com\u3002", "xn--pi-7ld.partner.com", "api.xn--prtner-2nf.com",
                     "api.partner.xn--com"]),
    # IP literals, in every spelling
    st.ip_addresses().map(lambda address: f"[{address}]" if address.version == 6 else str(address)),
    st.sampled_from(["2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]"]),
    # arbitrary text
    st.text(min_size=1, max_size=30),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=_OTHER_HOSTS)
def test_no_other_spelling_reaches_an_allowed_destination(policy: CompiledPolicy, host: str) -> None:
    """A host that is not `api.partner.com` (or below `regions.partner.com`) up to case, trailing dot and port is
    refused: by screening (not a host) or by the allowlist (not listed); never allowed as the partner's entry."""
    decision = egress_decision(policy, host)
    canonical = host.lower().rsplit(":", 1)[0].removesuffix(".") if not host.startswith("[") else host
    if canonical == "api.partner.com" or canonical.endswith(".regions.partner.com"):
        return  # a spelling of an allowed host after all (arbitrary text can produce one)
    assert not decision.allowed
    assert decision.status in (400, 403)


# --- callers: every other spelling of an allowed SPIFFE ID is no identity or another one ---

_CALLER_VARIANTS = st.sampled_from([
    "spiffe://CLUSTER.local/ns/shop/sa/checkout", "SPIFFE://cluster.local/ns/shop/sa/checkout",
    "spiffe://cluster.local/ns/shop/sa/checkout/", "spiffe://cluster.local/ns/shop/sa//checkout",
    "spiffe://cluster.local/ns/shop/sa/./checkout", "spiffe://cluster.local/ns/x/../shop/sa/checkout",
    "spiffe://cluster.local/ns/shop/sa/check%6Fut", "spiffe://cluster.local:443/ns/shop/sa/checkout",
    "spiffe://user@cluster.local/ns/shop/sa/checkout", "spiffe://cluster.local/ns/shop/sa/checkout?x=1",
    "spiffe://cluster.local/ns/shop/sa/checkout#x", "spiffe://cluster.local/ns/shop/sa/Checkout",
    "spiffe://cluster.local/ns/shop/sa/checkout ", "spiffe://cluster.local/ns/shop/sa/сheckout",
    "spiffe://cluster.local./ns/shop/sa/checkout",
])


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caller=st.one_of(_CALLER_VARIANTS, st.text(max_size=60), st.text(max_size=10).map(lambda s: CHECKOUT + s)))
def test_no_other_spelling_of_a_caller_is_that_caller(policy: CompiledPolicy, caller: str) -> None:
    """Only the exact, canonical SPIFFE ID is the listed caller; a variant is another identity or none."""
    if caller == CHECKOUT:
        return
    assert not egress_decision(policy, "api.partner.com", peer=caller).allowed


@pytest.mark.parametrize(("text", "parts"), [
    (CHECKOUT, ("cluster.local", "shop", "checkout")),
    ("spiffe://corp/workers/etl", ("corp", None, None)),
])
def test_a_verified_peer_names_its_trust_domain_namespace_and_service_account(text: str, parts: tuple) -> None:
    """The Kubernetes form `/ns/<namespace>/sa/<account>` yields both; other paths neither."""
    peer = verified_peer(text)
    assert peer is not None
    assert (peer.trust_domain, peer.namespace, peer.service_account) == parts


def test_a_prefix_never_covers_itself_nor_a_longer_segment() -> None:
    """`spiffe://corp/ns/shop/*` covers `ns/shop/...`, not `ns/shop` itself nor `ns/shopx/...` nor another domain."""
    prefix = parse_peer("spiffe://corp/ns/shop")
    assert prefix is not None
    assert parse_peer("spiffe://corp/ns/shop/sa/a").under(prefix)  # type: ignore[union-attr]
    for other in ("spiffe://corp/ns/shop", "spiffe://corp/ns/shopx/sa/a", "spiffe://corp2/ns/shop/sa/a"):
        assert not parse_peer(other).under(prefix)  # type: ignore[union-attr]


#: Cases for the shipped egress allowlist; each call carries `direction: egress` as the egress listener sets it.
EGRESS_CASES = """\
apiVersion: extauth/v1
kind: PolicyTest
metadata:
  name: egress
cases:
  - name: the demo client calls the partner API
    request:
      url: https://api.partner.example/v1/rates
      peer: spiffe://extauth.local/ns/demo/sa/client
      context_extensions: {direction: egress}
    expect:
      decision: allow
      rule: egress/egress/partner-api
      limits:
        - name: egress/egress/partner-api/per-caller
          key: "egress/egress/partner-api/per-caller|peer=spiffe://extauth.local/ns/demo/sa/client|host=api.partner.example"
  - name: another workload may not call it
    request:
      url: https://api.partner.example/v1/rates
      peer: spiffe://extauth.local/ns/other/sa/batch
      context_extensions: {direction: egress}
    expect: {decision: deny, status: 403, reason: forbidden}
  - name: a host no entry lists is refused
    request:
      url: https://api.partner.example.evil.example/v1/rates
      peer: spiffe://extauth.local/ns/demo/sa/client
      context_extensions: {direction: egress}
    expect: {decision: deny, status: 403, reason: no_matching_route}
  - name: the demo namespace reaches the partner's status pages
    request:
      url: https://eu.status.partner.example/
      peer: spiffe://extauth.local/ns/demo/sa/batch
      context_extensions: {direction: egress}
    expect: {decision: allow, rule: egress/egress/partner-status}
"""


def test_policy_tests_judge_egress_cases_by_the_egress_allowlist(tmp_path: Path) -> None:
    """`extauth test` runs a case marked `direction: egress` as the Check path does: by caller and host, limits too."""
    shutil.copy(SHIPPED / "egress.yaml", tmp_path / "egress.yaml")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "egress.yaml").write_text(EGRESS_CASES)
    results = run_policy_tests(tmp_path)
    assert len(results) == 4
    assert all(result.passed for result in results), [result.outcome for result in results]


# --- the schema ---

BAD_ENTRIES = {
    "unicode host": ("hosts: [bücher.example]", "egress[0].hosts[0]: 'bücher.example': write "
                     "internationalised names in their ASCII (xn--) form (write 'xn--bcher-kva.example')"),
    "ip host": ("hosts: [203.0.113.7]", "egress[0].hosts[0]: '203.0.113.7': an egress destination is a "
                "DNS name, not an IP address"),
    "hex ip host": ("hosts: ['0x7f000001']", "egress[0].hosts[0]: '0x7f000001': an egress destination is a DNS name"),
    "tld wildcard": ("hosts: ['*.com']", "egress[0].hosts[0]: '*.com': a wildcard would cover a whole top-level"),
    "host with port": ("hosts: ['api.partner.com:443']", "egress[0].hosts[0]: 'api.partner.com:443' is "
                       "not a host name or '*.' followed by one"),
    "caller not spiffe": ("callers: [checkout]", "egress[0].callers[0]: 'checkout' is not a SPIFFE ID"),
    "caller wildcard inside": ("callers: ['spiffe://corp/*/sa/x']", "egress[0].callers[0]: "
                               "'spiffe://corp/*/sa/x' is not a SPIFFE ID"),
    "caller trust-domain wildcard": ("callers: ['spiffe://corp/*']", "egress[0].callers[0]: "
                                     "'spiffe://corp/*' is not a SPIFFE ID"),
    "limit by subject": ("limits: [{name: l, key: [subject], windows: [{requests: 1, per: 1s}]}]",
                         "egress[0].limits[0].key[0]: 'subject': an egress call has no token"),
}


@pytest.mark.parametrize("case", BAD_ENTRIES, ids=list(BAD_ENTRIES))
def test_egress_entry_errors_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    """A mistake in an egress entry is a load error at its field, with what to write instead."""
    fragment, message = BAD_ENTRIES[case]
    entry = {"hosts": "hosts: [api.partner.com]", "callers": f"callers: [{CHECKOUT}]", "limits": ""}
    entry[fragment.split(":")[0]] = fragment
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\negress:\n  - name: e\n"
                    + "".join(f"    {line}\n" for line in entry.values() if line))
    with pytest.raises(ConfigError) as raised:
        compile_policy(path, ManualClock(0))
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{path}:")


def test_two_egress_entries_of_one_name_are_an_error(tmp_path: Path) -> None:
    """Entry ids name limits and decisions, so a name is used once per policy."""
    path = tmp_path / "p.yaml"
    entry = f"  - {{name: e, hosts: [a.example], callers: [{CHECKOUT}]}}\n"
    path.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\negress:\n" + entry + entry)
    with pytest.raises(ConfigError, match=r"p.yaml:6: egress\[1\].name: .*'e' defined twice"):
        compile_policy(path, ManualClock(0))


# --- through the pipeline: limits per caller and destination, credentials kept, audit direction ---

class NoTokens:
    """An authenticator that must not be asked: an egress call is not authenticated by token."""

    ready = True

    async def authenticate(self, headers: object) -> None:
        raise AssertionError("an egress call was authenticated by token")


class Fixed:
    def __init__(self, policy: CompiledPolicy) -> None:
        self.current, self.shadow = policy, None


def test_limits_count_per_caller_and_destination_and_events_say_egress(policy: CompiledPolicy) -> None:
    """Two calls pass, the third of the same caller is 429; the call keeps its Authorization; events say egress."""
    sink = MemorySink()
    forward = AuthenticationConfig().forward.model_copy(update={"strip_authorization": True})
    limiter = RateLimiter(MemoryStorage(), ManualClock(1_000_000))
    pipeline = Pipeline(NoTokens(), Fixed(policy), Responder(forward), sink, "t", rate_limit=RateLimitPhase(limiter))

    def call(peer: str = CHECKOUT, host: str = "api.partner.com") -> object:
        request = check_request("/v1/orders", host=host, peer=peer, context_extensions=EGRESS,
                                headers={"authorization": "Bearer partner-api-key"})
        return asyncio.run(pipeline.check(request))

    first, second, third = call(), call(), call()
    assert first.status.code == second.status.code == code_pb2.OK
    assert "authorization" not in first.ok_response.headers_to_remove
    assert third.denied_response.status.code == 429
    event = sink.events[-1]
    assert (event["direction"], event["destination"], event["peer_principal"], event["reason"]) == (
        "egress", "api.partner.com", CHECKOUT, "rate_limited")
    assert event["rate_limit"]["key"] == f"out/egress/partner/per-caller|peer={CHECKOUT}|host=api.partner.com"
    refused = call(host="api.other.com")
    assert refused.denied_response.status.code == 403
    assert "direction" not in asyncio.run(_ingress_event(pipeline, sink))


async def _ingress_event(pipeline: Pipeline, sink: MemorySink) -> dict[str, object]:
    await pipeline.check(check_request("/anything"))
    return sink.events[-1]
