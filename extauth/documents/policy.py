"""The policy file schema (`apiVersion: extauth/v1`, `kind: Policy`), documented in docs/policy.md.

Values with a syntax of their own (regexes, CIDRs, time zones, templates) are checked here, so every mistake
is a validation error with file, line and field; the compilers (authorization/matching.py,
conditions/compiler.py) trust them.
"""

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal

import cel
from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from extauth.documents import syntax
from extauth.documents.fields import HeaderName, Name, Strict
from extauth.documents.regex_safety import UnsafeRegexError, compile_safe

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
#: A claim value to compare with; a list in the policy means "any of these".
ClaimValue = str | int | bool


def _parsed_by(parse: Callable[[str], object], errors: type[Exception] | tuple[type[Exception], ...],
               describe: Callable[[str, Exception], str]) -> Callable[[str], str]:
    """A validator that accepts what `parse` accepts, and rewords its error for the policy author."""
    def check(value: str) -> str:
        try:
            parse(value)
        except errors as exc:
            raise ValueError(describe(value, exc)) from None
        return value
    return check


#: Checked as if case-insensitive, since paths may be matched so: a superset of the overlaps either way.
_regex = _parsed_by(lambda value: compile_safe(value, re.IGNORECASE), (re.error, UnsafeRegexError),
                    lambda value, exc: str(exc) if isinstance(exc, UnsafeRegexError)
                    else f"invalid regular expression: {exc}")
_cidr = _parsed_by(ipaddress.ip_network, ValueError, lambda value, exc: f"invalid CIDR: {exc}")
_timezone = _parsed_by(zoneinfo.ZoneInfo, (zoneinfo.ZoneInfoNotFoundError, ValueError),
                       lambda value, exc: f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
_expression = _parsed_by(cel.compile, ValueError,
                         lambda value, exc: f"invalid CEL expression: {str(exc).splitlines()[0]}")


def _peer(value: str) -> str:
    """A SPIFFE ID, or one ending in `/*` for every ID below it (`spiffe://corp/*`: every workload of corp)."""
    return _spiffe_pattern(value, whole_trust_domain=True)


_SERVICE_ACCOUNT = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/([a-z0-9]([-a-z0-9]*[a-z0-9])?"
                              r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|\*)")


def _service_account(value: str) -> str:
    """`namespace/name` or `namespace/*`, spelt as Kubernetes names are (lower case), so a rule can never be
    written for a spelling no token carries."""
    if not _SERVICE_ACCOUNT.fullmatch(value):
        raise ValueError(f"{value!r}: a service account is 'namespace/name' or 'namespace/*' (lower-case "
                         "Kubernetes names)")
    return value


def _upstream_header(value: Any) -> Any:
    """Refuse what extauth itself controls before the generic header-name check runs."""
    if isinstance(value, str) and value.startswith(":"):
        raise ValueError("pseudo-headers cannot be set")
    if isinstance(value, str) and value.lower() == "authorization":
        raise ValueError("cannot be set: extauth removes credentials before the upstream")
    return value


def _time_of_day(value: Any) -> Any:
    syntax.seconds_of_day(value)
    return value


def _listed(value: Any) -> Any:
    """Accept a single value where a list of alternatives is meant."""
    return value if isinstance(value, list) else [value]


def _checked(check: Any) -> AfterValidator:
    def run(value: str) -> str:
        check(value)
        return value
    return AfterValidator(run)


Regex = Annotated[str, AfterValidator(_regex)]
Alternatives = Annotated[list[ClaimValue], BeforeValidator(_listed), Field(min_length=1)]
ClaimPath = Annotated[str, _checked(syntax.claim_path)]
TimeOfDay = Annotated[str, BeforeValidator(_time_of_day)]


class PathMatch(Strict):
    """Exactly one of: `exact`, `prefix`, `template` (`/tenants/{tenant}/orders/{id}`), `regex` (full match)."""

    exact: str | None = None
    prefix: str | None = None
    template: Annotated[str, _checked(syntax.parse_template)] | None = None
    regex: Regex | None = None
    #: Paths match case-insensitively by default (many upstreams route that way); `true` compares exactly.
    case_sensitive: bool = False
    #: `same_resource`: a literal last segment `orders` also matches `orders.json` (upstreams with suffix
    #: matching serve both); `exact`: only `orders`.
    extensions: Literal["same_resource", "exact"] = "same_resource"

    @model_validator(mode="after")
    def _one_kind(self) -> "PathMatch":
        chosen = [kind for kind in ("exact", "prefix", "template", "regex") if getattr(self, kind) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of exact, prefix, template, regex (got {chosen or 'none'})")
        if chosen[0] in ("exact", "prefix") and not getattr(self, chosen[0]).startswith("/"):
            raise ValueError("paths start with '/'")
        return self

    def parameters(self) -> tuple[str, ...]:
        """The path parameters a match binds: template `{names}` or the regex's named groups."""
        if self.template is not None:
            template = syntax.parse_template(self.template)
            return (*template.params, *((template.rest,) if template.rest else ()))
        if self.regex is not None:
            return tuple(re.compile(self.regex).groupindex)
        return ()


class RouteMatch(Strict):
    """All given parts must match; an omitted part matches anything."""

    #: `api.example.com` or `*.example.com`; compared with the request's host without its port.
    hosts: list[Annotated[str, AfterValidator(syntax.host_pattern)]] | None = Field(None, min_length=1)
    path: PathMatch | None = None
    methods: list[HttpMethod] | None = Field(None, min_length=1)
    #: Envoy per-route `context_extensions` (e.g. `service: orders`), set in the Envoy route config.
    context_extensions: dict[str, str] = Field(default_factory=dict)


class ValueMatch(Strict):
    """A header or query parameter: `value`, `[values]`, `{present: bool}` or `{regex: ...}` (full match)."""

    equals: list[str] | None = Field(None, min_length=1)
    present: bool | None = None
    regex: Regex | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if not isinstance(value, str | int | list) or isinstance(value, bool):
            return value
        return {"equals": [str(item) if isinstance(item, int) else item for item in _listed(value)]}

    @model_validator(mode="after")
    def _one_kind(self) -> "ValueMatch":
        chosen = [kind for kind in ("equals", "present", "regex") if getattr(self, kind) is not None]
        if len(chosen) != 1:
            raise ValueError(f"give a value, a list of values, {{present: bool}} or {{regex: ...}} (got {chosen})")
        return self


class TimeWindow(Strict):
    """Local time in `timezone`: on one of `weekdays`, within `between: [start, end)`."""

    timezone: Annotated[str, AfterValidator(_timezone)]
    weekdays: list[Weekday] | None = Field(None, min_length=1)
    #: `["08:00", "18:00"]`; a start after the end spans midnight (`["22:00", "06:00"]`).
    between: tuple[TimeOfDay, TimeOfDay] | None = None

    @model_validator(mode="after")
    def _something(self) -> "TimeWindow":
        if self.weekdays is None and self.between is None:
            raise ValueError("give weekdays, between, or both")
        if self.between is not None and self.between[0] == self.between[1]:
            raise ValueError("between: start and end are equal; the window would be empty")
        return self


class Condition(Strict):
    """Every given part must hold; within a list, any element suffices."""

    roles: list[str] | None = Field(None, min_length=1)
    subjects: list[str] | None = Field(None, min_length=1)
    issuers: list[str] | None = Field(None, min_length=1)
    #: Matched against the principal's groups: read only from the claim its provider trusts (`groups_claim`).
    groups: list[str] | None = Field(None, min_length=1)
    #: Matched against the `scope` claim (space-separated) or the `scp` claim (a list).
    scopes: list[str] | None = Field(None, min_length=1)
    #: claim (dotted path allowed) → value or list of values; a list-valued claim needs to contain one.
    claims: dict[ClaimPath, Alternatives] | None = Field(None, min_length=1)
    #: The verified client certificate's SPIFFE ID (docs/client-certificates.md): exact, or a prefix ending in `/*`.
    peer: list[Annotated[str, AfterValidator(_peer)]] | None = Field(None, min_length=1)
    #: Kubernetes service accounts (`billing/invoicer`, or `billing/*`) of a `preset: kubernetes` provider's token.
    service_accounts: list[Annotated[str, AfterValidator(_service_account)]] | None = Field(None, min_length=1)
    headers: dict[HeaderName, ValueMatch] | None = Field(None, min_length=1)
    query: dict[str, ValueMatch] | None = Field(None, min_length=1)
    source_cidrs: list[Annotated[str, AfterValidator(_cidr)]] | None = Field(None, min_length=1)
    #: path parameter → claim that must equal it (`{tenant: tenant}`): the tenant / owner check.
    params_match_claims: dict[str, ClaimPath] | None = Field(None, min_length=1)
    time: TimeWindow | None = None
    #: A CEL expression over `request`, `principal`, `claims`, `roles` and `params`: the escape hatch. It costs
    #: 20-50 µs per evaluation (the native conditions ~1 µs), so it is evaluated after them.
    expression: Annotated[str, AfterValidator(_expression)] | None = None

    def principal_parts(self) -> list[str]:
        """The parts that read the caller's token (refused on a public route, whose callers may have none)."""
        parts = [name for name in _PRINCIPAL_PARTS if getattr(self, name) is not None]
        expression = self.expression
        if expression is not None and not _PRINCIPAL_VARIABLES.isdisjoint(cel.compile(expression).variables()):
            parts.append("expression")
        return parts


#: Condition parts that read the principal; every other part (source_cidrs, headers, query, peer, time) reads only
#: the request, so it means the same for an anonymous caller.
_PRINCIPAL_PARTS = ("roles", "subjects", "issuers", "groups", "scopes", "claims", "params_match_claims",
                    "service_accounts")
#: CEL variables (conditions/compiler.py) that come from the token.
_PRINCIPAL_VARIABLES = frozenset({"principal", "claims", "roles"})


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: The rate-limit key part kinds, and whether a kind names something (`claim:NAME`): the one table the schema
#: validates against and the limit planner (ratelimit/plan.py) builds from.
KEY_PART_KINDS: dict[str, bool] = {"subject": False, "issuer": False, "client_ip": False, "route": False,
                                   "method": False, "host": False, "peer": False,
                                   "claim": True, "param": True, "header": True, "context": True}
KEY_PARTS = tuple(kind for kind, named in KEY_PART_KINDS.items() if not named)
KEY_PART_PREFIXES = tuple(f"{kind}:" for kind, named in KEY_PART_KINDS.items() if named)


def _duration(value: object) -> object:
    """`500ms`, `10s`, `5m`, `1h`, `1d`, or a number of seconds."""
    return parse_duration(value) if isinstance(value, str) else value


def parse_duration(text: str) -> float:
    """Seconds in `500ms`, `10s`, `5m`, `1h`, `1d` (also `extauth apikey create --ttl`)."""
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 10s, 5m, 1h or 1d")
    return float(found.group(1)) * _DURATION_UNITS[found.group(2)]


def _key_part(value: str) -> str:
    kind, _, name = value.partition(":")
    if value in KEY_PARTS or (value.startswith(KEY_PART_PREFIXES) and name):
        if kind == "claim":
            syntax.claim_path(name)
        return f"header:{name.lower()}" if kind == "header" else value
    raise ValueError(f"{value!r} is not a key part: use one of {', '.join(KEY_PARTS)}, "
                     "or claim:NAME, param:NAME, header:NAME, context:NAME")


class Window(Strict):
    """`requests` per `per` (GCRA: they may come as one burst, then refill evenly)."""

    requests: int = Field(ge=1, le=10_000_000)
    per: Annotated[float, BeforeValidator(_duration), Field(ge=0.001, le=366 * 86400)]

    @model_validator(mode="after")
    def _exact_range(self) -> "Window":
        if self.requests * self.per * 1000 > 2**52:
            raise ValueError(f"{self.requests} per {self.per}s is beyond the exact range of the limiter")
        return self


class LimitOverride(Strict):
    """Other windows when `when` holds (e.g. a role, a time of day); the first matching override wins."""

    when: Condition
    windows: list[Window] = Field(min_length=1)


_PUBLIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,62}$")


def _public_name(value: str) -> str:
    """Sent to clients inside a structured-field string: a plain, short name (no quotes, no backslashes)."""
    if not _PUBLIC_NAME.match(value):
        raise ValueError(f"{value!r} must be 1-63 letters, digits, '_', '.', '/', ':', '-', "
                         "starting with a letter or digit")
    return value


class RateLimit(Strict):
    name: Name
    #: The name clients see in `RateLimit-Policy` / `RateLimit` (default: `name`, never the route's internal id).
    public_name: Annotated[str, AfterValidator(_public_name)] | None = None
    #: What is counted separately: e.g. [subject], [claim:tenant, route], [client_ip]. At most 8 parts of at most
    #: 128 characters each, so a key stays bounded whatever the values.
    key: list[Annotated[str, Field(max_length=128), AfterValidator(_key_part)]] = Field(min_length=1, max_length=8)
    #: `client_ip` counts per network of this prefix length: IPv4 per address, IPv6 per /64 by default.
    ipv4_prefix: int = Field(32, ge=0, le=32)
    ipv6_prefix: int = Field(64, ge=0, le=128)
    #: Every window applies at once (a burst per second and a daily quota together).
    windows: list[Window] = Field(min_length=1)
    overrides: list[LimitOverride] = Field(default_factory=list)
    #: When the limit store (Redis) cannot answer: allow, refuse (503), or count in this process instead.
    failure_mode: Literal["open", "closed", "local"] = "local"
    #: `exact`: every request is counted in the store; `leased`: this process leases units from the store and
    #: spends them locally (fewer store calls, a bounded over-admission: docs/ratelimit.md, "Leased mode").
    mode: Literal["exact", "leased"] = "exact"
    #: Over the limit: `reject` (429) or `queue`: wait up to `max_wait` for the request to conform (ratelimit.md).
    on_limit: Literal["reject", "queue"] = "reject"
    max_wait: Annotated[float, BeforeValidator(_duration), Field(ge=0.001, le=60)] | None = None
    #: Count and report would-be rejections without enforcing them.
    shadow: bool = False
    cost: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _queue_needs_max_wait(self) -> "RateLimit":
        if self.on_limit == "queue" and self.max_wait is None:
            raise ValueError("on_limit: queue needs max_wait (how long a request may wait, e.g. 500ms)")
        if self.on_limit != "queue" and self.max_wait is not None:
            raise ValueError("max_wait is set, but on_limit is not queue")
        if self.on_limit == "queue" and self.mode == "leased":
            raise ValueError("on_limit: queue needs mode: exact (a wait is reserved in the store, not in a lease)")
        return self

    @model_validator(mode="after")
    def _prefixes_need_client_ip(self) -> "RateLimit":
        prefixes = {"ipv4_prefix", "ipv6_prefix"} & self.model_fields_set
        if prefixes and "client_ip" not in self.key:
            raise ValueError(f"{' and '.join(sorted(prefixes))} set, but the key has no client_ip")
        return self


class Rule(Strict):
    name: Name
    effect: Literal["allow", "deny"] = "allow"
    when: Condition = Field(default_factory=Condition)
    #: Added to the upstream request when this rule allows; values may use `{param}` and `{claims.NAME}`.
    headers: dict[Annotated[HeaderName, BeforeValidator(_upstream_header)],
                  Annotated[str, _checked(syntax.parse_header_template)]] = Field(default_factory=dict)
    #: Rate limits applied when this rule is the one that allows.
    limits: list[RateLimit] = Field(default_factory=list)

    @model_validator(mode="after")
    def _headers_only_on_allow(self) -> "Rule":
        if self.headers and self.effect == "deny":
            raise ValueError("headers are added on allow; a deny rule cannot set them")
        if self.limits and self.effect == "deny":
            raise ValueError("limits apply to allowed requests; a deny rule cannot have them")
        return self


class Route(Strict):
    name: Name
    match: RouteMatch = Field(default_factory=RouteMatch)
    #: Anonymous access: no credentials needed (a presented token must still be valid). With `rules`, only the
    #: requests they allow, judged on the request alone (source_cidrs, headers, query, peer, time).
    public: bool = False
    #: Allow CORS preflights (OPTIONS with Origin and Access-Control-Request-Method naming a method this
    #: resource admits) without credentials; they are still audited. Other OPTIONS requests need the method listed.
    cors_preflight: bool = False
    rules: list[Rule] = Field(default_factory=list)
    #: Rate limits applied to every request this route allows (public ones included).
    limits: list[RateLimit] = Field(default_factory=list)

    @model_validator(mode="after")
    def _public_or_rules(self) -> "Route":
        if not self.public and not self.rules:
            raise ValueError("a route needs rules, or `public: true`; unmatched requests are denied anyway")
        if self.public and self.rules:
            _check_public_rules(self.rules)
        return self


def _check_public_rules(rules: list[Rule]) -> None:
    """A public route's rules decide for anonymous callers too, so they may only look at the request; and since
    no matching allow rule is a 403, a public route with rules needs one (every error at its own field)."""
    why = ("a public route's rules also decide for anonymous callers, who have no token: use source_cidrs, "
           "headers, query, peer or time here, or drop `public: true`")
    errors = [(("rules", index, "when", part), f"{part} reads the caller's token; {why}")
              for index, rule in enumerate(rules) for part in rule.when.principal_parts()]
    errors += [(("rules", index, "headers", name), f"{{claims...}} reads the caller's token; {why}")
               for index, rule in enumerate(rules) for name, value in rule.headers.items()
               if any(isinstance(part, tuple) and part[0] == "claim" for part in syntax.parse_header_template(value))]
    if all(rule.effect == "deny" for rule in rules):
        errors.append((("public",), "a public route with rules needs an allow rule: when no allow rule matches, "
                                    "the request is denied (403)"))
    if errors:
        raise ValidationError.from_exception_data("Route", [
            InitErrorDetails(type=PydanticCustomError("value_error", "{error}", {"error": message}), loc=loc,
                             input=None) for loc, message in errors])


#: Limit key parts that mean something for a workload calling out (it has a certificate, not a token or a route).
EGRESS_KEY_PARTS = frozenset({"peer", "host", "method", "route", "client_ip", "header", "context"})


def _egress_host(value: str) -> str:
    """An external host as the egress gateway's Envoy routes it: a DNS name (IDNA names in their `xn--` form) whose
    top-level label starts with a letter, so no IP literal in any notation (`10.0.0.1`, `0x0a000001`), which a
    resolver would take as an address; a wildcard covers names below a registrable domain, never a whole TLD."""
    if not value.isascii():
        try:
            hint = f" (write {value.encode('idna').decode()!r})"
        except UnicodeError:
            hint = ""
        raise ValueError(f"{value!r}: write internationalised names in their ASCII (xn--) form{hint}")
    host = syntax.host_pattern(value)
    if not host.rsplit(".", 1)[-1][0].isalpha():
        raise ValueError(f"{value!r}: an egress destination is a DNS name, not an IP address")
    if host.startswith("*.") and "." not in host[2:]:
        raise ValueError(f"{value!r}: a wildcard would cover a whole top-level domain; name the domain (*.example.com)")
    return host


def _caller(value: str) -> str:
    """A SPIFFE ID (`spiffe://cluster.local/ns/shop/sa/checkout`), or one ending in `/*` for every ID below it."""
    return _spiffe_pattern(value, whole_trust_domain=False)


def _spiffe_pattern(value: str, *, whole_trust_domain: bool) -> str:
    """Only the canonical spelling (`syntax.spiffe_id`): the verified peer is compared with it as an identity, so
    any other spelling could never match and is refused here rather than silently matching nothing."""
    exact = value.removesuffix("/*")
    parsed = syntax.spiffe_id(exact)
    if parsed is None or (exact != value and not parsed[1] and not whole_trust_domain):
        raise ValueError(f"{value!r} is not a SPIFFE ID (spiffe://<trust domain>/<path>, lower-case trust domain, "
                         "segments of letters, digits, '.', '_', '-') nor one followed by '/*'")
    return value


class EgressDestination(Strict):
    """External hosts workloads may reach through the egress gateway, which workloads, and how often
    (docs/egress.md)."""

    name: Name
    #: `api.partner.com` or `*.partner.com`, compared with the request's canonical host (case, trailing dot, port).
    hosts: list[Annotated[str, AfterValidator(_egress_host)]] = Field(min_length=1)
    #: The calling workloads' SPIFFE IDs (from their verified client certificates): exact, or a prefix ending `/*`.
    callers: list[Annotated[str, AfterValidator(_caller)]] = Field(min_length=1)
    #: Counted for every call this entry allows; key parts: peer, host, method, route, client_ip, header, context.
    limits: list[RateLimit] = Field(default_factory=list)

    @model_validator(mode="after")
    def _limits_read_the_call(self) -> "EgressDestination":
        errors = [(("limits", index, "key", position), f"{part!r}: an egress call has no token, route parameters "
                   f"or claims; use {', '.join(sorted(EGRESS_KEY_PARTS))}")
                  for index, limit in enumerate(self.limits) for position, part in enumerate(limit.key)
                  if part.partition(":")[0] not in EGRESS_KEY_PARTS]
        errors += [(("limits", index, "overrides", o_index, "when", part),
                    f"{part} reads a token; an egress call has none")
                   for index, limit in enumerate(self.limits) for o_index, override in enumerate(limit.overrides)
                   for part in override.when.principal_parts()]
        names = [limit.name for limit in self.limits]
        errors += [(("limits", index, "name"), f"limit {name!r} defined twice")
                   for index, name in enumerate(names) if name in names[:index]]
        if errors:
            raise ValidationError.from_exception_data("EgressDestination", [
                InitErrorDetails(type=PydanticCustomError("value_error", "{error}", {"error": message}), loc=loc,
                                 input=None) for loc, message in errors])
        return self


class Metadata(Strict):
    name: Name


class PolicyDocument(Strict):
    apiVersion: Literal["extauth/v1"]  # noqa: N815 - the file's own key
    kind: Literal["Policy"]
    metadata: Metadata
    #: role -> roles it inherits (`admin: [writer]`, `writer: [reader]`).
    roles: dict[Name, list[Name]] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    #: The egress allowlist: which workloads may call which external hosts (docs/egress.md).
    egress: list[EgressDestination] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_egress_names(self) -> "PolicyDocument":
        names = [destination.name for destination in self.egress]
        duplicates = [index for index, name in enumerate(names) if name in names[:index]]
        if duplicates:
            raise ValidationError.from_exception_data("PolicyDocument", [
                InitErrorDetails(type=PydanticCustomError("value_error", "{error}", {
                    "error": f"egress destination {names[index]!r} defined twice"}), loc=("egress", index, "name"),
                    input=None) for index in duplicates])
        return self
