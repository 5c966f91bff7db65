"""Limits declared in policy files, compiled once per policy load into per-request LimitChecks.

A limit attached to a route applies to every request that route allows; one attached to a rule applies
when that rule is the one that allows. The counting key is the limit's id plus the values of its key parts
(`demo/limited/per-subject|subject=alice`), so each subject, tenant or client IP has its own bucket.

Key values are client-influenced, so the key is an injective encoding of them (docs/ratelimit.md, "Keys"):
every character outside a safe printable-ASCII set is percent-encoded (its UTF-8 bytes, lone surrogates
included), so `|`, `=`, `{`, `}`, `~`, `#`, `%` and `,` never appear raw in a value; `~` alone marks a missing
value; a value longer than 64 characters becomes `#<bytes>:<digest>`, which no escaped literal can spell.
Keys are therefore ASCII, bounded, free of Redis Cluster hash-tag braces, and distinct for distinct values.
"""

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from extauth.clock import Clock
from extauth.conditions.compiler import MISSING, claim_at, compile_condition
from extauth.conditions.predicate import Predicate
from extauth.decision import Decision
from extauth.documents.loader import PolicySet
from extauth.documents.policy import KEY_PART_KINDS, RateLimit, Window
from extauth.documents.syntax import claim_path
from extauth.identity.peer import verified_peer
from extauth.identity.principal import ANONYMOUS, Principal
from extauth.ratelimit.model import Limit, LimitCheck
from extauth.request import Request

_MAX_KEY_VALUE = 64
#: Buckets (key and windows) per limit whose checks a compiled limit keeps for the next request; emptied when full.
CHECKS_CACHE_SIZE = 4096
KeyPart = Callable[[Request, Principal | None, Decision], str]
#: Characters a key value keeps as they are: printable ASCII except space and `"#%,=\{|}~`.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$&'()*+-./:;<>?@[]^_`")
_PLAIN = re.compile(f"[{re.escape(''.join(sorted(_SAFE)))}]*").fullmatch


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def _escape(value: str) -> str:
    """Percent-encode every character outside `_SAFE` (reversible: `unquote(_, errors="surrogatepass")`)."""
    if _PLAIN(value):
        return value
    return "".join(char if char in _SAFE else _percent(char) for char in value)


def _digest(data: bytes, kind: bytes = b"") -> str:
    return hashlib.blake2b(data, digest_size=16, person=kind).hexdigest()


def _bounded(value: str, always_hash: bool = False) -> str:
    """A value as a key part: escaped when short; `#<bytes>:<digest>` when long (bounded keys); `#<digest>` when
    `always_hash` (header values may be secrets: neither they nor their length reach Redis or the audit trail)."""
    if always_hash:
        return "#" + _digest(value.encode("utf-8", "surrogatepass"), b"secret")
    if len(value) <= _MAX_KEY_VALUE:
        escaped = _escape(value)
        if len(escaped) <= _MAX_KEY_VALUE:
            return escaped
    data = value.encode("utf-8", "surrogatepass")
    return f"#{len(data)}:{_digest(data)}"


def _peer_key(request: Request) -> str:
    """The caller's SPIFFE ID, counted only in its canonical spelling; no verified identity counts as `~`."""
    peer = verified_peer(request.peer_principal)
    return _bounded(peer.spiffe_id) if peer is not None else "~"


def _claim_text(value: object) -> str:
    """A claim counts by its text: a string as it is, any other JSON value as compact JSON (so `1` and `"1"`
    share a bucket); a list is its items' texts, each escaped, joined by a raw `,` (a one-item list counts as
    its item, as JWT `aud` does; an empty one counts as missing)."""
    if isinstance(value, str):
        return _bounded(value)
    if value == []:
        return "~"
    if not isinstance(value, list):
        return _bounded(json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True))
    joined = ",".join(_escape(item if isinstance(item, str) else json.dumps(
        item, ensure_ascii=False, separators=(",", ":"), sort_keys=True)) for item in value)
    if len(joined) <= _MAX_KEY_VALUE:
        return joined
    data = joined.encode()
    return f"#{len(data)}:{_digest(data, b'list')}"  # another domain than a string's digest: never equal


def _client_network(ipv4_prefix: int, ipv6_prefix: int) -> KeyPart:
    """The client's network: the address itself by default for IPv4, its /64 for IPv6 (one host commonly owns a
    whole /64, so per-address buckets would give it 2^64 of them); an IPv4-mapped IPv6 address counts as IPv4."""
    def client_ip(request: Request, principal: Principal | None, decision: Decision) -> str:
        address = request.source_ip
        if address is None:
            return _bounded(request.source_address)  # not an IP (a unix socket peer): counted by its name
        prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
        if prefix == address.max_prefixlen:
            return str(address)
        return ipaddress.ip_network((address, prefix), strict=False).with_prefixlen
    return client_ip


def _claim_part(name: str) -> KeyPart:
    path = claim_path(name)

    def claim(request: Request, principal: Principal | None, decision: Decision) -> str:
        value = claim_at(principal.claims, path) if principal else MISSING
        if value is MISSING:
            return "~"
        return _claim_text(value)
    return claim


def _header_part(name: str) -> KeyPart:
    def header(request: Request, principal: Principal | None, decision: Decision) -> str:
        value = request.headers.get(name)
        return "~" if value is None else _bounded(value, always_hash=True)
    return header


def _subject(request: Request, principal: Principal | None, decision: Decision) -> str:
    return _bounded(principal.identity) if principal else "~"


def _issuer(request: Request, principal: Principal | None, decision: Decision) -> str:
    return _bounded(principal.issuer) if principal else "~"


def _route(request: Request, principal: Principal | None, decision: Decision) -> str:
    return decision.route or "~"


def _method(request: Request, principal: Principal | None, decision: Decision) -> str:
    return _bounded(request.method)


def _host(request: Request, principal: Principal | None, decision: Decision) -> str:
    return _bounded(request.hostname)


def _peer(request: Request, principal: Principal | None, decision: Decision) -> str:
    return _peer_key(request)


def _param_part(name: str) -> KeyPart:
    def param(request: Request, principal: Principal | None, decision: Decision) -> str:
        return _bounded(decision.params.get(name, "~"))
    return param


def _context_part(name: str) -> KeyPart:
    def context(request: Request, principal: Principal | None, decision: Decision) -> str:
        return _bounded(request.context_extensions.get(name, "~"))
    return context


#: The key parts of `KEY_PART_KINDS` (the schema's table): those that read one fixed attribute, those named by
#: their spec (`claim:tenant`), and `client_ip`, whose prefix lengths are the limit's (`_key_part`). Plain
#: functions rather than nested lambdas, so the module compiles with mypyc (docs/deployment.md).
_FIXED_PARTS: dict[str, KeyPart] = {"subject": _subject, "issuer": _issuer, "route": _route, "method": _method,
                                    "host": _host, "peer": _peer}
_NAMED_PARTS: dict[str, Callable[[str], KeyPart]] = {"claim": _claim_part, "param": _param_part,
                                                     "context": _context_part, "header": _header_part}
_PART_KINDS = {*_FIXED_PARTS, *_NAMED_PARTS, "client_ip"}

if KEY_PART_KINDS.keys() != _PART_KINDS:
    raise ImportError(f"key part kinds without a builder or a schema entry: "
                      f"{sorted(_PART_KINDS ^ KEY_PART_KINDS.keys())}")


def _key_part(spec: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> KeyPart:
    kind, _, name = spec.partition(":")
    if kind == "client_ip":
        return _client_network(ipv4_prefix, ipv6_prefix)
    fixed = _FIXED_PARTS.get(kind)
    return fixed if fixed is not None else _NAMED_PARTS[kind](name)


def _limits(windows: list[Window]) -> tuple[Limit, ...]:
    return tuple(Limit(window.requests, window.per) for window in windows)


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    limit_id: str
    #: The name clients see in `RateLimit-Policy` and `RateLimit` (never the key values).
    public_name: str
    parts: tuple[tuple[str, KeyPart], ...]
    windows: tuple[Limit, ...]
    overrides: tuple[tuple[tuple[Predicate, ...], tuple[Limit, ...]], ...]
    failure_mode: str
    shadow: bool
    cost: int
    mode: str = "exact"
    max_wait_ms: int = 0
    #: The checks made for each bucket (its key, and the override that fired or None): a bucket's requests share
    #: them (they are immutable), so each is built and validated once, not per request.
    _made: dict[tuple[str, int | None], tuple[LimitCheck, ...]] = field(default_factory=dict, compare=False,
                                                                        repr=False)

    def key(self, request: Request, principal: Principal | None, decision: Decision) -> str:
        return self.limit_id + "".join(f"|{name}={part(request, principal, decision)}" for name, part in self.parts)

    def override(self, request: Request, principal: Principal | None, decision: Decision) -> int | None:
        """The index of the first override whose condition holds, or None (the limit's own windows apply)."""
        who, params = principal or ANONYMOUS, decision.params
        for index, (conditions, _) in enumerate(self.overrides):
            if all(check.test(request, who, params) for check in conditions):
                return index
        return None

    def checks(self, request: Request, principal: Principal | None, decision: Decision) -> tuple[LimitCheck, ...]:
        key = self.key(request, principal, decision)
        fired = self.override(request, principal, decision) if self.overrides else None
        made = self._made.get((key, fired))
        if made is None:
            windows = self.windows if fired is None else self.overrides[fired][1]
            made = tuple(LimitCheck(key, limit, self.cost, self.failure_mode, self.shadow,  # type: ignore[arg-type]
                                    self.public_name, self.mode, self.max_wait_ms)  # type: ignore[arg-type]
                         for limit in windows)
            if len(self._made) >= CHECKS_CACHE_SIZE:
                self._made.clear()
            self._made[(key, fired)] = made
        return made


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    """One limit as it would apply to one allowed request: its bucket key and the windows chosen for it."""

    limit_id: str
    public_name: str
    key: str
    windows: tuple[Limit, ...]
    failure_mode: str
    shadow: bool
    cost: int
    #: The index of the override that fired (`overrides[i]`), or None for the limit's own windows.
    override: int | None
    #: How many overrides the limit declares (so "none fired" can be told from "has none").
    override_count: int = 0
    mode: str = "exact"
    max_wait_ms: int = 0

    @property
    def windows_text(self) -> str:
        """`5 per 10s and 1000 per 86400s`."""
        return " and ".join(f"{window.limit} per {window.period_seconds:g}s" for window in self.windows)

    @property
    def summary(self) -> str:
        """What is counted, and how: `<key> 5 per 10s, failure mode local` (`, cost 2`, `, shadow`)."""
        extras = ((f", cost {self.cost}" if self.cost != 1 else "") + (", shadow" if self.shadow else "")
                  + (f", {self.mode}" if self.mode != "exact" else "")
                  + (f", queued up to {self.max_wait_ms}ms" if self.max_wait_ms else ""))
        return f"{self.key} {self.windows_text}, failure mode {self.failure_mode}{extras}"

    def describe(self) -> str:
        """`demo/limited/per-subject (public "per-subject"): key demo/limited/per-subject|subject=alice, ...`."""
        details = [f"key {self.key}", self.windows_text, f"failure mode {self.failure_mode}"]
        if self.override is not None:
            details.append(f"override overrides[{self.override}] fired")
        elif self.override_count:
            details.append(f"none of {self.override_count} overrides fired")
        if self.cost != 1:
            details.append(f"cost {self.cost}")
        if self.shadow:
            details.append("shadow (counted, not enforced)")
        if self.mode != "exact":
            details.append(f"{self.mode} mode")
        if self.max_wait_ms:
            details.append(f"queued up to {self.max_wait_ms}ms over the limit")
        return f'{self.limit_id} (public "{self.public_name}"): {", ".join(details)}'


def limit_changes(live: tuple[AppliedLimit, ...], candidate: tuple[AppliedLimit, ...]) -> dict[str, list[str]]:
    """The limits only the live policy applies (`removed`) and only the candidate applies (`added`), by summary: a
    limit whose windows, key or failure mode change appears in both. Empty when they apply the same limits."""
    before, after = [limit.summary for limit in live], [limit.summary for limit in candidate]
    removed, added = [text for text in before if text not in after], [text for text in after if text not in before]
    return {"removed": removed, "added": added} if removed or added else {}


class RateLimitPlan:
    """Which limits apply to an allowed decision, by the route and rule that allowed it."""

    def __init__(self, policy_set: PolicySet, clock: Clock,
                 granting: Mapping[str, frozenset[str]] | None = None) -> None:
        """`granting`: the policy set's role closure, when the bundle has already computed it."""
        granting = policy_set.granting_roles() if granting is None else granting
        by_scope: dict[str, tuple[CompiledLimit, ...]] = {}
        for route_id, route in policy_set.routes():
            if route.limits:
                by_scope[route_id] = tuple(_compile(route_id, limit, granting, clock) for limit in route.limits)
            for rule in route.rules:
                rule_id = f"{route_id}/{rule.name}"
                if rule.limits:
                    by_scope[rule_id] = tuple(_compile(rule_id, limit, granting, clock) for limit in rule.limits)
        for destination_id, destination in policy_set.egress():
            if destination.limits:
                by_scope[destination_id] = tuple(_compile(destination_id, limit, granting, clock)
                                                 for limit in destination.limits)
        self._by_scope: Mapping[str, tuple[CompiledLimit, ...]] = by_scope

    def __bool__(self) -> bool:
        return bool(self._by_scope)

    def checks_for(self, request: Request, decision: Decision) -> list[LimitCheck]:
        checks: list[LimitCheck] = []
        scopes = (decision.route,) if decision.rule == decision.route else (decision.route, decision.rule)
        for scope in scopes:
            for limit in self._by_scope.get(scope or "", ()):
                checks.extend(limit.checks(request, decision.principal, decision))
        return checks

    def applicable(self, request: Request, decision: Decision) -> tuple[AppliedLimit, ...]:
        """What `checks_for` would count, limit by limit, with the override that fired; counts nothing (for
        `extauth explain`, `extauth test` and shadow comparisons)."""
        scopes = (decision.route,) if decision.rule == decision.route else (decision.route, decision.rule)
        applied = []
        for scope in scopes:
            for limit in self._by_scope.get(scope or "", ()):
                fired = limit.override(request, decision.principal, decision) if limit.overrides else None
                applied.append(AppliedLimit(
                    limit.limit_id, limit.public_name, limit.key(request, decision.principal, decision),
                    limit.windows if fired is None else limit.overrides[fired][1], limit.failure_mode, limit.shadow,
                    limit.cost, fired, len(limit.overrides), limit.mode, limit.max_wait_ms))
        return tuple(applied)



def _compile(scope: str, limit: RateLimit, granting: Mapping[str, frozenset[str]], clock: Clock) -> CompiledLimit:
    return CompiledLimit(
        limit_id=f"{scope}/{limit.name}",
        public_name=limit.public_name or limit.name,
        parts=tuple((_escape(spec), _key_part(spec, limit.ipv4_prefix, limit.ipv6_prefix)) for spec in limit.key),
        windows=_limits(limit.windows),
        overrides=tuple((compile_condition(override.when, granting, clock, deny=False, source=f"{scope}/{limit.name}"),
                         _limits(override.windows)) for override in limit.overrides),
        failure_mode=limit.failure_mode,
        shadow=limit.shadow,
        cost=limit.cost,
        mode=limit.mode,
        max_wait_ms=round(limit.max_wait * 1000) if limit.on_limit == "queue" and limit.max_wait else 0,
    )
