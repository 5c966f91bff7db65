"""Limit keys: an injective, bounded, hash-tag-free encoding of client-influenced values; client networks; aliases."""

import ipaddress
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.documents.policy import KEY_PART_KINDS
from extauth.ratelimit import MemoryStorage, RateLimiter
from extauth.ratelimit.model import MAX_KEY_BYTES, has_hash_tag
from extauth.ratelimit.phase import RateLimitPhase
from extauth.ratelimit.plan import _bounded
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: keys}
roles: {reader: []}
routes:
  - name: api
    match: {path: {prefix: /api}}
    rules:
      - {name: readers, when: {roles: [reader]}}
    limits:
      - {name: parts, key: [subject, claim:a, claim:b, header:x-k], windows: [{requests: 5, per: 1s}]}
  - name: open
    match: {path: {prefix: /open}}
    public: true
    limits:
      - {name: per-ip, key: [client_ip], windows: [{requests: 5, per: 1s}]}
      - {name: per-net, public_name: per-network, key: [client_ip], ipv4_prefix: 24, ipv6_prefix: 48,
         windows: [{requests: 50, per: 1s}]}
"""

#: Text as JSON claims may carry it: any code point, lone surrogates and NUL included, plus spellings made to
#: collide with the structure of a key or to forge its markers.
TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=80),
    st.sampled_from(["", "~", "#", "%", "%7C", "%7E", "a|b", "a/b", "a(b)", "{a}", "a=b", "x|claim:b=y", "a,b",
                     "#3:abc", "#12:0123456789abcdef0123456789abcdef", "\ud800", "\x00", "x" * 65, "é" * 33]),
)
#: A claim: missing (None), a text, or a list of two or more texts (a one-item list counts as its item).
CLAIM = st.one_of(st.none(), TEXT, st.lists(TEXT, min_size=2, max_size=4))
#: Header values reach extauth as protobuf strings: valid UTF-8 (no lone surrogates); None is absent.
HEADER = st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]), max_size=80))

SAFE_KEY_CHARACTERS = frozenset(map(chr, range(0x21, 0x7F))) - set('"\\{}')


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("keys")
    (directory / "keys.yaml").write_text(POLICY)
    return compile_policy(directory, ManualClock(1_000_000))


def key_of(policy, subject: str, a: object, b: object, header: str | None) -> str:
    claims = {name: value for name, value in (("a", a), ("b", b)) if value is not None}
    request = Request(check_request("/api/x", headers={} if header is None else {"x-k": header}))
    decision = policy.engine.authorize(request, principal(subject, ["reader"], claims=claims))
    (check,) = policy.limits.checks_for(request, decision)
    return check.key


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.tuples(TEXT, CLAIM, CLAIM, HEADER), second=st.tuples(TEXT, CLAIM, CLAIM, HEADER))
def test_distinct_key_part_values_always_give_distinct_keys(policy, first, second) -> None:
    """Two requests share a bucket only if every key part has the same value: no separator, marker, brace,
    escape or hash spelling makes different values meet."""
    first_key, second_key = key_of(policy, *first), key_of(policy, *second)
    assert (first_key == second_key) == (first == second)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.tuples(TEXT, CLAIM, CLAIM, HEADER))
def test_keys_are_printable_ascii_of_bounded_length_without_hash_tags(policy, parts) -> None:
    """Whatever the values, a key is printable ASCII (so valid UTF-8), bounded, and never carries a Redis Cluster
    hash tag of the client's: the storage key's tag is always the whole key."""
    key = key_of(policy, *parts)
    assert set(key) <= SAFE_KEY_CHARACTERS
    assert len(key) <= len("keys/api/parts") + 4 * (len("|claim:b=") + 64) < MAX_KEY_BYTES
    assert not has_hash_tag(key)


@given(value=TEXT)
def test_short_values_are_escaped_reversibly_and_long_ones_hashed_with_an_unforgeable_marker(value: str) -> None:
    """A value of at most 64 escaped characters decodes back to itself; anything longer is `#<bytes>:<digest>`,
    and no escaped literal starts with the `#` marker or is the `~` of a missing value."""
    encoded = _bounded(value)
    assert len(encoded) <= 64
    if encoded.startswith("#"):
        size, _, digest = encoded[1:].partition(":")
        assert int(size) == len(value.encode("utf-8", "surrogatepass")) and len(digest) == 32
    else:
        assert unquote(encoded, errors="surrogatepass") == value
        assert encoded != "~" and not set(encoded) & set('"#,=\\{|}~ ')


def test_header_values_are_hashed_without_their_length(policy) -> None:
    """A header value (possibly a secret) appears as `#<digest>` only: neither it nor its length is in the key."""
    key = key_of(policy, "alice", None, None, "sk_live_0123456789")
    part = key.rpartition("|header:x-k=")[2]
    assert part.startswith("#") and ":" not in part and "sk_live" not in key


def open_key(policy, source: str, limit: int = 0) -> str:
    request = Request(check_request("/open/x", source=source))
    return policy.limits.checks_for(request, policy.engine.authorize(request, None))[limit].key


IPV6_HOSTS = st.integers(0, 2**64 - 1)
IPV6_NETWORKS = st.integers(0, 2**64 - 1)


@given(network=IPV6_NETWORKS, hosts=st.tuples(IPV6_HOSTS, IPV6_HOSTS))
def test_every_address_of_one_ipv6_64_shares_one_bucket(policy, network: int, hosts: tuple[int, int]) -> None:
    """Two addresses of one /64 (a single host can own all of them) count against one bucket."""
    first, second = (str(ipaddress.IPv6Address(network << 64 | host)) for host in hosts)
    assert open_key(policy, first) == open_key(policy, second)


@given(networks=st.tuples(IPV6_NETWORKS, IPV6_NETWORKS).filter(lambda pair: pair[0] != pair[1]), host=IPV6_HOSTS)
def test_two_ipv6_64s_never_share_a_bucket(policy, networks: tuple[int, int], host: int) -> None:
    """Addresses of different /64s are counted separately."""
    first, second = (str(ipaddress.IPv6Address(network << 64 | host)) for network in networks)
    assert open_key(policy, first) != open_key(policy, second)


def test_client_ip_keys_name_the_network(policy) -> None:
    """IPv4 counts per address, IPv6 per /64, an IPv4-mapped address as its IPv4 address, a non-IP peer by name."""
    assert open_key(policy, "192.0.2.10") == "keys/open/per-ip|client_ip=192.0.2.10"
    assert open_key(policy, "::ffff:192.0.2.10") == "keys/open/per-ip|client_ip=192.0.2.10"
    assert open_key(policy, "2001:db8:1:2:3:4:5:6") == "keys/open/per-ip|client_ip=2001:db8:1:2::/64"
    assert open_key(policy, "/run/envoy|{x}.sock") == "keys/open/per-ip|client_ip=/run/envoy%7C%7Bx%7D.sock"


def test_configured_prefixes_widen_the_client_network(policy) -> None:
    """`ipv4_prefix: 24` and `ipv6_prefix: 48` count per /24 and per /48; a mapped address follows the IPv4 one."""
    assert open_key(policy, "192.0.2.10", 1) == open_key(policy, "192.0.2.250", 1) == \
        open_key(policy, "::ffff:192.0.2.99", 1) == "keys/open/per-net|client_ip=192.0.2.0/24"
    assert open_key(policy, "2001:db8:1:2::1", 1) == open_key(policy, "2001:db8:1:ffff::1", 1) == \
        "keys/open/per-net|client_ip=2001:db8:1::/48"
    assert open_key(policy, "2001:db8:2::1", 1) != open_key(policy, "2001:db8:1::1", 1)


async def test_clients_see_the_limit_alias_or_its_name_never_the_internal_id(policy) -> None:
    """`RateLimit-Policy` names each limit by its `public_name`, else its own `name`: no policy or route ids."""
    request = Request(check_request("/open/x"))
    decision = await RateLimitPhase(RateLimiter(MemoryStorage(), ManualClock(0))).apply(
        policy.limits, request, policy.engine.authorize(request, None))
    headers = dict(decision.client_headers)
    assert headers["ratelimit-policy"] == '"per-ip/5per1s";q=5;w=1, "per-network/50per1s";q=50;w=1'
    assert headers["ratelimit"] == '"per-ip/5per1s";r=4;t=1'


BAD = {
    "prefix without client_ip": ("key: [subject]\n      ipv6_prefix: 56",
                                 "8: routes[0].limits[0]: ipv6_prefix set, but the key has no client_ip"),
    "prefix out of range": ("key: [client_ip]\n      ipv6_prefix: 129",
                            "11: routes[0].limits[0].ipv6_prefix: Input should be less than or equal to 128"),
    "alias with a quote": ("key: [subject]\n      public_name: 'a\"b'",
                           "11: routes[0].limits[0].public_name: 'a\"b' must be 1-63 letters, digits, '_', '.', "
                           "'/', ':', '-', starting with a letter or digit"),
    "too many key parts": ("key: [subject, issuer, route, method, host, client_ip, claim:a, claim:b, claim:c]",
                           "10: routes[0].limits[0].key: List should have at most 8 items after validation, not 9"),
    "too long a key part": ("key: [header:" + "x" * 130 + "]",
                            "10: routes[0].limits[0].key[0]: String should have at most 128 characters"),
}


@pytest.mark.parametrize("fragment, message", BAD.values(), ids=BAD.keys())
def test_limit_key_settings_are_checked_at_load(tmp_path: Path, fragment: str, message: str) -> None:
    """Network prefixes, aliases and key sizes are validated at load, the error naming file, line and field."""
    path = tmp_path / "p.yaml"
    path.write_text("apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - name: r\n"
                    "    public: true\n    limits:\n    - name: l\n      windows: [{requests: 1, per: 1s}]\n"
                    f"      {fragment}\n")
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    assert str(raised.value) == f"{path}:{message}"


@pytest.mark.parametrize("kind", list(KEY_PART_KINDS))
def test_every_key_part_kind_the_schema_admits_builds_a_key(tmp_path: Path, kind: str) -> None:
    """The schema and the planner read one table of kinds, so a kind that validates also counts."""
    spec = f"{kind}:x" if KEY_PART_KINDS[kind] else kind
    document = POLICY.replace("key: [subject, claim:a, claim:b, header:x-k]", f"key: [{spec}]")
    (tmp_path / "p.yaml").write_text(document.replace("{prefix: /api}", '{template: "/api/{x}"}'))
    policy = compile_policy(tmp_path, ManualClock(1_000_000))
    request = Request(check_request("/api/x"))
    decision = policy.engine.authorize(request, principal("alice", ["reader"]))
    (check,) = policy.limits.checks_for(request, decision)
    assert check.key.startswith("keys/api/parts")
