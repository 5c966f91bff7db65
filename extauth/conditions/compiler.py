"""A rule's `when`, compiled once into small checks: `test` on the hot path, `why` for `extauth explain`.

Each check is a closure over what it needs, prepared at load (role closures, sets, compiled regexes, network
integers, a ZoneInfo), so evaluating one costs a few dictionary or set look-ups. Principal checks come first
(cheapest, and most often decisive), then request checks, then time.

A header or query condition reads every value the upstream might read (docs/policy.md, "Repeated values"):
a deny rule's condition matches if any of them does, an allow rule's (and a limit override's) only if all of
them do; when some do and some do not, the allow rule is ambiguous and the request is answered 400.
"""

import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from extauth.clock import Clock
from extauth.conditions.cel import expression_check
from extauth.conditions.params import Params
from extauth.conditions.predicate import Predicate
from extauth.documents.policy import Condition, TimeWindow, ValueMatch
from extauth.documents.syntax import claim_path, seconds_of_day
from extauth.identity.claims import MISSING, claim_at
from extauth.identity.peer import parse_peer, peer_of
from extauth.identity.principal import Principal
from extauth.request import Request

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def strings(value: Any) -> tuple[str, ...] | list[Any]:
    """A claim that holds one string or a list of them, as a sequence (anything else: empty)."""
    if isinstance(value, str):
        return (value,)
    return value if isinstance(value, list) else ()


def compile_condition(when: Condition, granting: Mapping[str, frozenset[str]], clock: Clock, *,
                      deny: bool, source: str) -> tuple[Predicate, ...]:
    """`deny`: the condition of a deny rule, which fails closed (any value matches; an expression error holds).
    Otherwise every value must match and an expression error does not hold. `source` names the rule (or limit
    override) in the expression-error metric."""
    checks: list[Predicate] = []
    if when.roles:
        checks.append(_roles(when.roles, granting))
    if when.subjects:
        checks.append(_one_of("subjects", "identity", frozenset(when.subjects), lambda r, p: p.identity))
    if when.issuers:
        checks.append(_one_of("issuers", "issuer", frozenset(when.issuers), lambda r, p: p.issuer))
    if when.groups:
        checks.append(_any_of("groups", "groups claim", frozenset(when.groups), lambda principal: principal.groups))
    if when.scopes:
        checks.append(_any_of("scopes", "scopes", frozenset(when.scopes), _granted_scopes))
    if when.service_accounts:
        checks.append(_service_accounts(when.service_accounts))
    for name, values in (when.claims or {}).items():
        checks.append(_claim(name, values))
    if when.peer:
        checks.append(_peer(when.peer, clock))
    for name, spec in (when.headers or {}).items():
        checks.append(_value(f"headers.{name}", spec, _header_values(name), deny))
    for name, spec in (when.query or {}).items():
        checks.append(_value(f"query.{name}", spec, _query_values(name), deny))
    if when.source_cidrs:
        checks.append(_source_cidrs(when.source_cidrs))
    for param, claim in (when.params_match_claims or {}).items():
        checks.append(_param_equals_claim(param, claim))
    if when.time:
        checks.append(_time(when.time, clock))
    if when.expression:
        checks.append(expression_check(when.expression, deny, source, clock))
    return tuple(checks)


def _roles(required: list[str], granting: Mapping[str, frozenset[str]]) -> Predicate:
    accepted = frozenset().union(*(granting[role] for role in required))
    return Predicate("roles", lambda r, p, _: not accepted.isdisjoint(p.roles),
                 lambda r, p, _: f"roles {sorted(p.roles)} include none of {sorted(required)} "
                                 f"nor a role inheriting one")


def _one_of(name: str, label: str, wanted: frozenset[str], get: Callable[[Request, Principal], str]) -> Predicate:
    return Predicate(name, lambda r, p, _: get(r, p) in wanted,
                 lambda r, p, _: f"{label} {get(r, p)!r} is not one of {sorted(wanted)}")


def _any_of(name: str, label: str, wanted: frozenset[str], get: Callable[[Principal], Any]) -> Predicate:
    def test(request: Request, principal: Principal, params: Params) -> bool:
        for value in get(principal):  # noqa: SIM110 - a loop beats any() over a generator here
            if isinstance(value, str) and value in wanted:
                return True
        return False

    return Predicate(name, test, lambda r, p, _: f"{label} {list(get(p))} include none of {sorted(wanted)}")


def _granted_scopes(principal: Principal) -> list[Any]:
    """OAuth `scope` (space-separated string) and `scp` (a list, as some IdPs send), together."""
    claims = principal.claims
    scope = claims.get("scope")
    granted = scope.split() if isinstance(scope, str) else []
    scp = claims.get("scp")
    return granted + (scp.split() if isinstance(scp, str) else list(strings(scp)))


def _scalar_key(value: Any) -> Any:
    """Hashable identity of a claim value that keeps `true` apart from 1; MISSING for anything else."""
    return (type(value) is bool, value) if isinstance(value, str | int | float) else MISSING


def _claim(name: str, values: list[Any]) -> Predicate:
    path = claim_path(name)
    wanted = frozenset(_scalar_key(value) for value in values)

    def test(request: Request, principal: Principal, params: Params) -> bool:
        value = claim_at(principal.claims, path)
        if isinstance(value, list):
            return any(_scalar_key(item) in wanted for item in value)
        return _scalar_key(value) in wanted

    def why(request: Request, principal: Principal, params: Params) -> str:
        value = claim_at(principal.claims, path)
        return "claim is missing" if value is MISSING else f"{value!r} is not one of {values}"

    return Predicate(f"claims.{name}", test, why)


def _service_accounts(accounts: list[str]) -> Predicate:
    exact = frozenset(account for account in accounts if not account.endswith("/*"))
    namespaces = frozenset(account[:-2] for account in accounts if account.endswith("/*"))

    def test(request: Request, principal: Principal, params: Params) -> bool:
        account = principal.service_account
        return account is not None and (account in exact or account.partition("/")[0] in namespaces)

    return Predicate("service_accounts", test,
                     lambda r, p, _: f"service account {p.service_account or '(none)'} is not one of {accounts}")


def _peer(peers: list[str], clock: Clock) -> Predicate:
    """Compared as identities (`identity.peer`), never as text: a SPIFFE ID that is not in its canonical spelling
    is no identity, so it matches no entry and falls under no prefix."""
    exact = frozenset(peer for peer in peers if not peer.endswith("/*"))
    prefixes = tuple(parse_peer(peer.removesuffix("/*")) for peer in peers if peer.endswith("/*"))

    def test(request: Request, principal: Principal, params: Params) -> bool:
        peer = peer_of(request, clock.now())
        return peer is not None and (peer.spiffe_id in exact
                                     or any(peer.under(prefix) for prefix in prefixes))  # type: ignore[arg-type]

    def why(request: Request, principal: Principal, params: Params) -> str:
        if peer_of(request, clock.now()) is not None:
            return f"peer {request.peer_principal} is not one of {peers}"
        if request.peer_principal:
            return (f"peer {request.peer_principal!r} is no identity (not a canonical SPIFFE ID, or its certificate "
                    f"names several or is not valid now)")
        return f"no client certificate (peer is not one of {peers})"

    return Predicate("peer", test, why)


#: Trimmed from both ends of a header or query value: whitespace and control characters, as an upstream's
#: `trim()` would (Java's trims every character up to U+0020), and zero-width spaces.
_PADDING = "".join(character for character in map(chr, range(0x3001))
                   if ord(character) <= 0x20 or character == "\x7f" or character.isspace()) + "\u200b\ufeff"


def _header_values(name: str) -> Callable[[Request], list[Any]]:
    """The elements of a header (Envoy joins repeated headers with `,`), trimmed; [MISSING] when absent."""
    def values(request: Request) -> list[Any]:
        value = request.headers.get(name)
        if value is None:
            return [MISSING]
        return [element.strip(_PADDING) for element in value.split(",")]

    return values


def _query_key(name: str, arrays: bool) -> str:
    """What upstreams may read as the same parameter: any case, and with `arrays`, PHP/Rails/qs arrays (`a[]`,
    `a[0]` for `a`; not for a policy name that is itself bracketed, such as JSON:API's `filter[status]`)."""
    if arrays and name.endswith("]") and "[" in name:
        name = name[:name.index("[")]
    return name.strip(_PADDING).casefold()


def _query_values(name: str) -> Callable[[Request], list[Any]]:
    """Every occurrence of the parameter (decoded, as are the names) under any spelling an upstream may read as
    it, trimmed. MISSING stands for the reading of an upstream that finds no parameter spelt exactly `name`:
    when it is absent, or only present under another spelling (`A=1` or `a[]=1` for `a`). A query with `;` is
    read both ways, as some upstreams (Rack 2, old Python) also split at `;`."""
    arrays = "[" not in name
    key = _query_key(name, arrays)

    def occurrences(params: Mapping[str, list[str]]) -> list[Any]:
        found: list[Any] = []
        exact = False
        for spelling, values in params.items():
            if spelling == name:
                exact = True
            elif _query_key(spelling, arrays) != key:
                continue
            found.extend(value.strip(_PADDING) for value in values)
        if not exact:
            found.append(MISSING)
        return found

    def values(request: Request) -> list[Any]:
        found = occurrences(request.query_params)
        if ";" in request.query:
            found += occurrences(parse_qs(request.query.replace(";", "&"), keep_blank_values=True))
        return found

    return values


def _value(name: str, spec: ValueMatch, values: Callable[[Request], list[Any]], deny: bool) -> Predicate:
    """A header or query condition, decided over every value (MISSING: no value) by `matches`: any of them for a
    deny rule, all of them for an allow rule, which is ambiguous when some but not all match."""
    matches: Callable[[Any], bool]
    if spec.present is not None:
        present = spec.present
        matches = (lambda value: value is not MISSING) if present else (lambda value: value is MISSING)
        wanted_text = "present" if present else "absent"
    elif spec.regex is not None:
        pattern = re.compile(spec.regex)
        matches = lambda value: value is not MISSING and pattern.fullmatch(value) is not None  # noqa: E731
        wanted_text = f"matching {spec.regex}"
    else:
        wanted = frozenset(value.strip(_PADDING) for value in spec.equals or ())
        matches = lambda value: value in wanted  # noqa: E731 - MISSING is never in `wanted`
        wanted_text = f"one of {sorted(wanted)}"

    def any_matches(request: Request, principal: Principal, params: Params) -> bool:
        for value in values(request):  # noqa: SIM110 - the hot path; a loop beats any() over a generator
            if matches(value):
                return True
        return False

    def all_match(request: Request, principal: Principal, params: Params) -> bool:
        for value in values(request):  # noqa: SIM110 - as above
            if not matches(value):
                return False
        return True

    def some_match(request: Request, principal: Principal, params: Params) -> bool:
        return len({matches(value) for value in values(request)}) == 2

    def why(request: Request, principal: Principal, params: Params) -> str:
        seen = ["(absent)" if value is MISSING else value for value in values(request)]
        if not deny and some_match(request, principal, params):
            return f"values {seen} disagree: some are {wanted_text} and some are not (ambiguous request)"
        return f"{'none' if deny else 'not all'} of {seen} {'is' if deny else 'are'} {wanted_text}"

    return Predicate(name, any_matches, why) if deny else Predicate(name, all_match, why, some_match)


def _source_cidrs(cidrs: list[str]) -> Predicate:
    networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
    by_version = {version: tuple((int(net.network_address), int(net.netmask)) for net in networks
                                 if net.version == version) for version in (4, 6)}

    def test(request: Request, principal: Principal, params: Params) -> bool:
        address = request.source_ip
        if address is None:
            return False
        number = int(address)
        for network, mask in by_version[address.version]:  # noqa: SIM110 - as above
            if number & mask == network:
                return True
        return False

    return Predicate("source_cidrs", test,
                 lambda r, p, _: f"source {r.source_address or '(none)'} is in none of {cidrs}")


def _param_equals_claim(param: str, claim: str) -> Predicate:
    path = claim_path(claim)

    def test(request: Request, principal: Principal, params: Params) -> bool:
        value = claim_at(principal.claims, path)
        if isinstance(value, str):
            return value == params.get(param)
        return isinstance(value, int) and not isinstance(value, bool) and str(value) == params.get(param)

    def why(request: Request, principal: Principal, params: Params) -> str:
        value = claim_at(principal.claims, path)
        shown = "missing" if value is MISSING else repr(value)
        return f"path parameter {param} is {params.get(param)!r} but claim {claim} is {shown}"

    return Predicate(f"params_match_claims.{param}", test, why)


def _time(window: TimeWindow, clock: Clock) -> Predicate:
    zone = zoneinfo.ZoneInfo(window.timezone)
    days = frozenset(WEEKDAYS.index(day) for day in window.weekdays or WEEKDAYS)
    start, end = (seconds_of_day(text) for text in window.between or ("00:00", "24:00"))

    def test(request: Request, principal: Principal, params: Params) -> bool:
        local = datetime.fromtimestamp(clock.now(), zone)
        if local.weekday() not in days:
            return False
        second = local.hour * 3600 + local.minute * 60 + local.second
        return start <= second < end if start < end else (second >= start or second < end)

    def why(request: Request, principal: Principal, params: Params) -> str:
        local = datetime.fromtimestamp(clock.now(), zone)
        window_text = " ".join(part for part in (",".join(window.weekdays or ()),
                                                 "-".join(window.between or ())) if part)
        return f"{local:%a %H:%M} in {window.timezone} is outside {window_text}"

    return Predicate("time", test, why)
