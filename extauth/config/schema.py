"""The configuration schema: one YAML file, documented field by field in docs/configuration.md.

Process settings (`server`, `audit`, `logging`) take effect at start; `policy` files are reloadable.
Relative paths are resolved against the directory of the file that names them.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from extauth.identity.headers import header_value_problem
from extauth.identity.urls import key_url_problem

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SHARED_SECRET_ALGORITHMS = ("HS256", "HS384", "HS512")
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]

#: Forwarded identity values longer than this are refused at authentication, never truncated.
DEFAULT_MAX_HEADER_VALUE_BYTES = 1024

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = Path(info.context["file"]).parent if info.context and "file" in info.context else Path.cwd()
    return value if value.is_absolute() else (base / value).resolve()


def _header_name(value: str) -> str:
    lowered = value.lower()
    if not _HEADER_NAME.match(lowered):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return lowered


def _key_url(value: str) -> str:
    problem = key_url_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} {problem}")
    return value


def _listen_address(value: str) -> str:
    ListenAddress.parse(value)
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be 1-63 letters, digits, '_', '.', '-', starting with a letter or digit")
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Name = Annotated[str, AfterValidator(_name)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """`tcp:HOST:PORT` or `unix:PATH`; with N workers each worker gets its own socket (see `for_worker`)."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: Path | None = None

    @classmethod
    def parse(cls, text: str, base: Path | None = None) -> "ListenAddress":
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest:
            path = Path(rest)
            return cls("unix", path=path if path.is_absolute() or base is None else (base / path).resolve())
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            host = host.strip("[]")
            if host and port.isdigit() and 0 <= int(port) <= 65535:
                return cls("tcp", host=host, port=int(port))
        raise ValueError(f"{text!r} is not 'tcp:HOST:PORT' or 'unix:PATH'")

    def for_worker(self, index: int, workers: int) -> "ListenAddress":
        """Worker i listens on port+i, or on `name-i.ext`: Envoy keeps one HTTP/2 connection per upstream
        host, so workers behind one shared socket would not share the load."""
        if workers == 1:
            return self
        if self.kind == "tcp":
            return ListenAddress("tcp", host=self.host, port=self.port + index if self.port else 0)
        assert self.path is not None
        return ListenAddress("unix", path=self.path.with_name(f"{self.path.stem}-{index}{self.path.suffix}"))

    def grpc_target(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.grpc_target()}"


class ServerConfig(Strict):
    listen: list[Annotated[str, AfterValidator(_listen_address)]] = Field(
        default_factory=lambda: ["tcp:127.0.0.1:9001"], min_length=1
    )
    workers: int = Field(1, ge=1, le=64)
    grace_period_seconds: float = Field(5.0, gt=0, le=300)
    max_concurrent_checks: int = Field(1000, ge=1, le=100_000)
    #: Prometheus text endpoint (`GET /metrics`) on its own socket; off when unset. Worker i uses port+i.
    metrics_listen: Annotated[str, AfterValidator(_listen_address)] | None = None

    def addresses(self, base: Path) -> list[ListenAddress]:
        return [ListenAddress.parse(value, base) for value in self.listen]


class JwksConfig(Strict):
    """Where a provider's verification keys come from: exactly one of `file`, `url`, `oidc_discovery`."""

    file: ConfigPath | None = None
    url: str | None = None
    oidc_discovery: bool = False
    refresh_seconds: float = Field(300.0, ge=5, le=86_400)
    refetch_cooldown_seconds: float = Field(30.0, ge=0, le=3600)
    fetch_timeout_seconds: float = Field(5.0, gt=0, le=60)
    ca_file: ConfigPath | None = None

    @field_validator("url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        return None if value is None else _key_url(value)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "JwksConfig":
        chosen = [name for name in ("file", "url") if getattr(self, name)] + (
            ["oidc_discovery"] if self.oidc_discovery else []
        )
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of file, url, oidc_discovery (got {chosen or 'none'})")
        return self


class JwtProviderConfig(Strict):
    name: Name
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    jwks: JwksConfig | None = None
    shared_secret_file: ConfigPath | None = None
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    required_claims: list[str] = Field(default_factory=lambda: ["exp", "sub"])
    #: The one provider whose subjects are vouched for unqualified (`root`, not `partner:root`) and whose
    #: `roles`/`groups` claims are trusted by default (extauth.identity.identities).
    primary: bool = Field(False, strict=True)
    #: Where roles are read; unset: `roles` for the primary provider, none for the others; null: none.
    roles_claim: str | None = Field(None, min_length=1)
    #: Where groups are read; unset: `groups` for the primary provider, none for the others; null: none.
    groups_claim: str | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _primary_trusts_standard_claims(cls, data: object) -> object:
        """Only the primary provider's `roles`/`groups` are trusted without being named: a partner IdP's users
        must not become admins because their IdP puts `admin` in a claim that happens to be called `roles`."""
        if isinstance(data, dict) and data.get("primary") is True:
            return {"roles_claim": "roles", "groups_claim": "groups", **data}
        return data

    @model_validator(mode="after")
    def _discovery_over_tls(self) -> "JwtProviderConfig":
        problem = key_url_problem(self.issuer) if self.jwks is not None and self.jwks.oidc_discovery else None
        if problem is not None:
            raise ValueError(f"issuer {self.issuer!r} {problem}: with oidc_discovery it is where keys come from")
        return self

    @model_validator(mode="after")
    def _keys_match_algorithms(self) -> "JwtProviderConfig":
        if (self.jwks is None) == (self.shared_secret_file is None):
            raise ValueError("set exactly one of jwks or shared_secret_file")
        wanted = SHARED_SECRET_ALGORITHMS if self.shared_secret_file else ASYMMETRIC_ALGORITHMS
        wrong = [alg for alg in self.algorithms if alg not in wanted]
        if wrong:
            kind = "a shared secret" if self.shared_secret_file else "JWKS (asymmetric keys)"
            raise ValueError(f"algorithms {wrong} cannot be used with {kind}; allowed: {list(wanted)}")
        return self


class TokenSourceConfig(Strict):
    """Where to find the token: a header (with an optional scheme such as `Bearer`) or a cookie."""

    header: HeaderName | None = None
    scheme: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> "TokenSourceConfig":
        if (self.header is None) == (self.cookie is None):
            raise ValueError("set exactly one of header or cookie")
        if self.scheme is not None and self.header is None:
            raise ValueError("scheme applies to a header source only")
        return self


class ForwardConfig(Strict):
    """Identity headers added to the upstream request when a request is allowed."""

    #: Carries the principal's identity (extauth.identity.identities), never a sanitised or truncated one.
    subject_header: HeaderName | None = "x-extauth-subject"
    #: On by default: with several providers the issuer is part of who the caller is.
    issuer_header: HeaderName | None = "x-extauth-issuer"
    #: The principal's roles as authorization saw them: only from the issuing provider's trusted `roles_claim`.
    roles_header: HeaderName | None = None
    #: The principal's groups, likewise only from the trusted `groups_claim`.
    groups_header: HeaderName | None = None
    #: `header: claim`, the claim a literal name or a dotted path (`realm_access.roles`), as any provider sent it.
    claim_headers: dict[HeaderName, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    strip_authorization: bool = True
    max_header_value_bytes: int = Field(DEFAULT_MAX_HEADER_VALUE_BYTES, ge=16, le=16_384)

    @model_validator(mode="after")
    def _distinct_headers(self) -> "ForwardConfig":
        names = [name for name in (self.subject_header, self.issuer_header, self.roles_header, self.groups_header)
                 if name] + list(self.claim_headers)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each forwarded header carries one thing; named more than once: {repeated}")
        return self

    @property
    def header_names(self) -> tuple[str, ...]:
        """Every header a forwarded identity may set: the ones a client's copy of is always removed."""
        return tuple(name for name in (self.subject_header, self.issuer_header, self.roles_header,
                                       self.groups_header, *self.claim_headers) if name)


class AuthenticationConfig(Strict):
    providers: list[JwtProviderConfig] = Field(default_factory=list)
    token_sources: list[TokenSourceConfig] = Field(
        default_factory=lambda: [TokenSourceConfig(header="authorization", scheme="Bearer")], min_length=1
    )
    max_token_bytes: int = Field(8192, ge=256, le=65_536)
    token_cache_size: int = Field(10_000, ge=0, le=1_000_000)
    forward: ForwardConfig = Field(default_factory=ForwardConfig)

    @model_validator(mode="after")
    def _unique_providers(self) -> "AuthenticationConfig":
        for attribute in ("name", "issuer"):
            seen: dict[str, int] = {}
            for index, provider in enumerate(self.providers):
                value = getattr(provider, attribute)
                if value in seen:
                    raise ValueError(f"providers[{index}] has the same {attribute} as providers[{seen[value]}]: "
                                     f"{value!r}")
                seen[value] = index
        return self

    @model_validator(mode="after")
    def _unambiguous_identities(self) -> "AuthenticationConfig":
        """Provider names qualify identities (`partner:root`), so they must differ in more than case; issuers
        are forwarded as they are, so they must be header-safe; and only one provider's subjects go unqualified."""
        names: dict[str, int] = {}
        for index, provider in enumerate(self.providers):
            other = names.setdefault(provider.name.lower(), index)
            if other != index:
                raise ValueError(f"providers[{index}] has the same name as providers[{other}] ignoring case: "
                                 f"{provider.name!r}")
            problem = header_value_problem(provider.issuer, self.forward.max_header_value_bytes)
            if problem is not None:
                raise ValueError(f"providers[{index}].issuer {problem}, so it cannot be forwarded unchanged")
        primary = [index for index, provider in enumerate(self.providers) if provider.primary]
        if len(primary) > 1:
            raise ValueError(f"only one provider may be primary; providers{primary} all are")
        return self


class PolicyConfig(Strict):
    path: ConfigPath
    #: Poll the policy files and reload on change (SIGHUP always reloads).
    watch: bool = True
    watch_interval_seconds: float = Field(2.0, ge=0.1, le=3600)
    #: A candidate policy evaluated beside the live one and never enforced; differences are audited.
    shadow_path: ConfigPath | None = None


#: Headers that may appear in decision events (`audit.headers`); none of them carries a credential.
DEFAULT_AUDIT_HEADERS = ("user-agent", "content-type", "content-length", "x-forwarded-proto")


class AuditConfig(Strict):
    """The audit stream (docs/audit.md): where it goes, how it is bounded, sampled and redacted."""

    output: Literal["stdout", "stderr"] | ConfigPath = "stdout"
    #: Events waiting for the writer; past it, allows are dropped (and counted) so denies can be kept.
    queue_size: int = Field(10_000, ge=1, le=1_000_000)
    #: Extra room for denies once the queue holds nothing droppable; past it a deny is dropped, counted, logged.
    deny_overflow: int = Field(10_000, ge=0, le=1_000_000)
    #: Fraction of allowed requests audited (decision and completion alike, chosen by request id); denies: all.
    allow_sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    #: Request headers copied into decision events; credential-bearing ones are masked even if listed here.
    headers: list[HeaderName] = Field(default_factory=lambda: list(DEFAULT_AUDIT_HEADERS))
    #: Keep the query string in `query` (values of secret-looking parameters masked); off: never written.
    include_query: bool = False
    #: Receive Envoy's access logs (gRPC ALS) on the server's sockets and write completion events.
    completion_events: bool = True


class BreakerConfig(Strict):
    """Stops calling a failing limit store: after `failure_threshold` consecutive failures the breaker opens for
    `cooldown_seconds` (failure modes answer in microseconds), then one probe decides whether it closes."""

    failure_threshold: int = Field(3, ge=1, le=1000)
    cooldown_seconds: float = Field(1.0, ge=0.05, le=300)


class RateLimitConfig(Strict):
    #: `memory://` (in-process, per replica), `redis://host:port/db`, `rediss://...`, `unix:///path.sock`,
    #: or `redis+cluster://host:port,host:port`. `serve --rate-limit-backend` overrides it.
    backend: str = "memory://"
    #: Per call to the store; past it the limit's failure mode answers.
    timeout_ms: float = Field(50.0, ge=1, le=5000)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    #: Concurrent checks within this window share one Redis pipeline; 0 batches only what is already queued,
    #: null sends each check on its own.
    batch_window_us: float | None = Field(0, ge=0, le=100_000)
    #: Send `RateLimit-Policy`/`RateLimit` to the client on allowed responses too (always on 429).
    headers_on_allow: bool = True

    @field_validator("backend")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if not value.startswith(schemes):
            raise ValueError(f"{value!r} must start with one of {', '.join(schemes)}")
        return value


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    policy: PolicyConfig
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
