"""The configuration schema: one YAML file, documented field by field in docs/configuration.md.

Process settings (`server`, `audit`, `logging`) take effect at start; `policy` files are reloadable.
Relative paths are resolved against the directory of the file that names them.
"""

import importlib.util
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from extauth.config.files import read_secret_environment, read_secret_file
from extauth.documents.errors import FieldValueError
from extauth.documents.fields import HeaderName, Name, Strict
from extauth.documents.headers import header_value_problem
from extauth.documents.regex_safety import UnsafeRegexError, compile_safe
from extauth.documents.urls import key_url_problem

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SHARED_SECRET_ALGORITHMS = ("HS256", "HS384", "HS512")
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]

#: Forwarded identity values longer than this are refused at authentication, never truncated.
DEFAULT_MAX_HEADER_VALUE_BYTES = 1024


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = Path(info.context["file"]).parent if info.context and "file" in info.context else Path.cwd()
    return value if value.is_absolute() else (base / value).resolve()


def _key_url(value: str) -> str:
    problem = key_url_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} {problem}")
    return value


def _listen_address(value: str) -> str:
    ListenAddress.parse(value)
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]

_ENVIRONMENT_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _environment_variable(value: str) -> str:
    if not _ENVIRONMENT_VARIABLE.match(value):
        raise ValueError(f"{value!r} is not an environment variable name (letters, digits, '_'; not a digit first)")
    return value


EnvironmentVariable = Annotated[str, AfterValidator(_environment_variable)]


def _no_problem(_: str) -> str | None:
    return None


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class SecretField:
    """A secret-valued setting `NAME`, given one way only: inline (`NAME:`, which `extauth validate` warns about),
    from a mounted file (`NAME_file:`, e.g. a Kubernetes Secret volume; the trailing newline is not part of it), or
    from an environment variable (`NAME_env:`). The file or variable is read once, when the config is loaded, into
    `NAME`: the code that uses the value never knows where it came from, and a rotated Secret takes a restart.
    Errors name the file or the variable, never the value. A model lists it in `SecretHolder.secret_fields` and
    declares `NAME_file: ConfigPath | None` and `NAME_env: EnvironmentVariable | None` beside `NAME`.
    """

    name: str
    #: The setting's own check of a value read from a file or variable: why it is wrong without echoing it, or None.
    problem: Callable[[str], str | None] = _no_problem
    #: Whether an inline value is secret (a Redis URL is only when it holds a password).
    secret_when_inline: Callable[[str], bool] = _always

    @property
    def file_field(self) -> str:
        return f"{self.name}_file"

    @property
    def env_field(self) -> str:
        return f"{self.name}_env"

    def resolve(self, data: object, info: ValidationInfo) -> object:
        """`data` with the value of `NAME_file` or `NAME_env` in `NAME` (a FieldValueError at the field that
        names an unreadable file, an unset variable or a value the setting refuses)."""
        if not isinstance(data, dict):
            return data  # not a mapping: the model reports it
        given = [field for field in (self.name, self.file_field, self.env_field) if field in data]
        if len(given) > 1:
            raise FieldValueError(given[-1], f"set only one of {self.name}, {self.file_field}, {self.env_field} "
                                             f"(got {' and '.join(given)})")
        source = given[0] if given else self.name
        reference = data.get(source)
        if source == self.name or not isinstance(reference, str):
            return data  # inline, absent, or a reference of the wrong type that the field itself reports
        try:
            if source == self.file_field:
                path = _resolve_path(Path(reference), info)
                origin = str(path)
                secret = read_secret_file(path)
            elif _ENVIRONMENT_VARIABLE.match(reference):
                origin = f"environment variable {reference}"
                secret = read_secret_environment(reference)
            else:
                return data  # not a variable name: the field reports it
            value = secret.decode("utf-8")
        except UnicodeDecodeError:
            raise FieldValueError(source, f"{origin} does not hold UTF-8 text") from None
        except ValueError as error:
            raise FieldValueError(source, str(error)) from None
        problem = self.problem(value)
        if problem is not None:
            raise FieldValueError(source, f"the value of {origin} {problem}")
        return {**data, self.name: value}


class SecretHolder(Strict):
    """A model with secret-valued fields (`secret_fields`), each resolved from its file or variable at load and
    checked by `extauth validate` for being written inline (LoadedConfig.inline_secrets)."""

    secret_fields: ClassVar[tuple[SecretField, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _resolve_secrets(cls, data: object, info: ValidationInfo) -> object:
        for secret in cls.secret_fields:
            data = secret.resolve(data, info)
        return data


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

    def local_only(self) -> bool:
        """Unix sockets and loopback TCP. `localhost` counts, other host names do not (they may resolve
        anywhere); `0.0.0.0` and `::` mean every interface, so they are not loopback."""
        if self.kind == "unix" or self.host == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return False
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)

    def grpc_target(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.grpc_target()}"


#: How an allowlisted client identity is written: the certificate field it must equal, then its value.
CLIENT_IDENTITY_KINDS = ("uri", "dns", "cn")
_DNS_NAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_NO_SPACE_OR_CONTROL = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


def canonical_client_identity(kind: str, value: str) -> str:
    """`kind:value` as compared: DNS names are case-insensitive and one trailing dot names the same host;
    URIs (SPIFFE IDs) and common names are compared exactly, so `/sa/Envoy` never matches `/sa/envoy`."""
    if kind == "dns":
        value = value.lower().removesuffix(".")
    return f"{kind}:{value}"


def _client_identity(text: str) -> str:
    kind, separator, value = text.partition(":")
    if not separator or kind not in CLIENT_IDENTITY_KINDS:
        raise ValueError(f"{text!r} must be 'uri:URI', 'dns:NAME' or 'cn:COMMON NAME'")
    if kind != "cn" and not _NO_SPACE_OR_CONTROL.match(value):
        raise ValueError(f"{text!r}: the {kind} must be non-empty, without spaces or control characters")
    if kind == "cn" and (not value.strip() or not value.isprintable()):
        raise ValueError(f"{text!r}: the common name must be non-empty printable text")
    canonical = canonical_client_identity(kind, value)
    if kind == "dns" and not _DNS_NAME.match(canonical.removeprefix("dns:")):
        # Wildcards included: a certificate for `*.internal` is not the client `envoy.internal`.
        raise ValueError(f"{text!r}: not a DNS name (letters, digits, '-' and '.'; no wildcards)")
    if kind == "uri" and not re.match(r"^[a-z][a-z0-9+.-]*://.", value):
        raise ValueError(f"{text!r}: not an absolute URI such as spiffe://trust-domain/path")
    return canonical


def pem_certificates(path: Path) -> Path:
    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    return path


def _pem_private_key(path: Path) -> Path:
    try:
        serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path} holds no unencrypted PEM private key") from None
    return path


ClientIdentity = Annotated[str, AfterValidator(_client_identity)]
CertificateFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(pem_certificates)]
PrivateKeyFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_pem_private_key)]


class ServerTlsConfig(Strict):
    """TLS on every TCP listener (unix sockets stay plaintext: file permissions guard them). The files are read
    at start; a renewed certificate takes a restart (one worker at a time keeps Envoy served)."""

    cert_file: CertificateFile
    key_file: PrivateKeyFile
    #: The CA bundle client certificates must chain to; required when client certificates are.
    client_ca_file: CertificateFile | None = None
    #: Refuse the handshake of a client without a certificate that `client_ca_file` verifies.
    require_client_certificate: bool = True
    #: Who may call Check over TLS (`uri:`, `dns:`, `cn:` identities); empty: any verified client certificate.
    allowed_clients: list[ClientIdentity] = Field(default_factory=list)
    #: Who may stream access logs (completion events) over TLS; empty: nobody over TCP.
    access_log_clients: list[ClientIdentity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _client_certificates_consistent(self) -> "ServerTlsConfig":
        if self.require_client_certificate and self.client_ca_file is None:
            raise ValueError("require_client_certificate needs client_ca_file, the CA that issues client "
                             "certificates")
        if not self.require_client_certificate and (self.allowed_clients or self.access_log_clients):
            raise ValueError("allowed_clients and access_log_clients need require_client_certificate: true "
                             "(without a certificate a client has no identity)")
        certificate = x509.load_pem_x509_certificates(self.cert_file.read_bytes())[0]
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        if key.public_key() != certificate.public_key():
            raise ValueError(f"key_file {self.key_file} is not the key of the first certificate in {self.cert_file}")
        return self


def _guarded_listen_address(value: str, info: ValidationInfo) -> str:
    """A TCP listener reachable from other hosts must authenticate its callers, or say in writing that it
    does not: Check reveals the policy to whoever asks and the Access Log Service writes the audit trail."""
    if "tls" not in info.data or "insecure" not in info.data:
        return value  # tls itself is invalid and reported; judging the listener on it would mislead
    tls: ServerTlsConfig | None = info.data["tls"]
    address = ListenAddress.parse(value)
    if address.local_only() or info.data["insecure"]:
        return value
    if tls is None:
        raise ValueError(f"{value} is reachable from other hosts without TLS: configure server.tls with client "
                         "certificates, listen on loopback or a unix socket, or set server.insecure: true")
    if not tls.require_client_certificate:
        raise ValueError(f"{value} is reachable from other hosts and TLS does not require client certificates, "
                         "so anyone can call Check: set server.tls.require_client_certificate: true or "
                         "server.insecure: true")
    return value


class ServerConfig(Strict):
    # `insecure` and `tls` come before `listen` because each listen address is judged against them.
    #: Accept unauthenticated callers on TCP addresses other hosts can reach (no TLS, or TLS without client
    #: certificates). Logged as a warning and an `insecure_listener` audit event at every start.
    insecure: bool = False
    tls: ServerTlsConfig | None = None
    listen: list[Annotated[str, AfterValidator(_listen_address), AfterValidator(_guarded_listen_address)]] = Field(
        default_factory=lambda: ["tcp:127.0.0.1:9001"], min_length=1
    )
    workers: int = Field(1, ge=1, le=64)
    grace_period_seconds: float = Field(5.0, gt=0, le=300)
    max_concurrent_checks: int = Field(1000, ge=1, le=100_000)
    #: Prometheus text endpoint (`GET /metrics`) on its own socket; off when unset. Worker i uses port+i.
    metrics_listen: Annotated[str, AfterValidator(_listen_address)] | None = None

    def addresses(self, base: Path) -> list[ListenAddress]:
        return [ListenAddress.parse(value, base) for value in self.listen]

    def unauthenticated(self, address: ListenAddress) -> bool:
        """A listener other hosts can reach that lets any of them call (only with `insecure: true`)."""
        mutual_tls = self.tls is not None and self.tls.require_client_certificate
        return not address.local_only() and not mutual_tls


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


#: The claims every projected Kubernetes service-account token carries and the preset requires.
KUBERNETES_REQUIRED_CLAIMS = ("exp", "iat", "sub", "aud", "kubernetes.io")


class TrustedClaims(Strict):
    """Who a provider's identities are and which of its claims are trusted: shared by JWT providers and
    introspection, whose answers become principals the same way (extauth.identity.identities)."""

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


class JwtProviderConfig(TrustedClaims):
    name: Name
    #: `kubernetes`: projected service-account tokens (extauth.identity.kubernetes): keys by OIDC discovery unless
    #: `jwks` says otherwise, `aud`/`exp`/`kubernetes.io` required, namespace and service account on the principal.
    preset: Literal["kubernetes"] | None = None
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    jwks: JwksConfig | None = None
    shared_secret_file: ConfigPath | None = None
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    required_claims: list[str] = Field(default_factory=lambda: ["exp", "sub"])
    @model_validator(mode="before")
    @classmethod
    def _kubernetes_defaults(cls, data: object) -> object:
        """The API server publishes its keys by OIDC discovery and every projected token carries these claims."""
        if not isinstance(data, dict) or data.get("preset") != "kubernetes":
            return data
        if "shared_secret_file" in data:
            raise ValueError("preset kubernetes verifies the API server's asymmetric keys: use jwks, not "
                             "shared_secret_file")
        required = list(data.get("required_claims", ()))
        return {**data, "jwks": data.get("jwks", {"oidc_discovery": True}),
                "required_claims": required + [claim for claim in KUBERNETES_REQUIRED_CLAIMS if claim not in required]}

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


#: Headers only a proxy may set, which upstream frameworks read as the URL or host instead of the request line
#: (IIS/Symfony `X-Original-URL`, Spring `X-Forwarded-Prefix`, Django/Rails `X-Forwarded-Host`, RFC 7239
#: `Forwarded`): removed from the client's request, so the upstream serves the request that was authorised.
DEFAULT_PROXY_HEADERS = ("x-original-url", "x-rewrite-url", "x-forwarded-host", "x-forwarded-prefix",
                         "x-forwarded-path", "x-forwarded-server", "x-host", "forwarded")


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
    #: Removed from the client's request on every allow (docs/security.md); `[]` when a trusted proxy in front
    #: of Envoy sets them.
    remove_request_headers: list[HeaderName] = Field(default_factory=lambda: list(DEFAULT_PROXY_HEADERS))

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


class ApiKeysConfig(Strict):
    """API keys (docs/apikeys.md): a store of key digests, reloaded on change, and where a request carries a key."""

    #: The store file (`extauth apikey create --store`); read at start, then whenever it changes.
    store: ConfigPath
    #: The request header holding the key; never forwarded upstream, never audited.
    header: HeaderName = "x-api-key"
    #: Also accept `Authorization: ApiKey <key>` (needs `forward.strip_authorization`).
    authorization_scheme: bool = False
    #: Qualifies identities (`apikey:ci-bot`) and is the principal's issuer and provider, so `issuers: [apikey]`
    #: restricts a rule to API keys; no JWT provider may have this name or issuer.
    name: Name = "apikey"
    watch: bool = True
    watch_interval_seconds: float = Field(2.0, ge=0.1, le=3600)


def _introspection_url(value: str) -> str:
    """Held to the key-URL rule: the token and the client secret travel in this request."""
    problem = key_url_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} {problem}")
    return value


class IntrospectionBreakerConfig(Strict):
    """Stops calling a failing introspection endpoint for `cooldown_seconds` after `failure_threshold`
    consecutive failures; then one probe decides whether it closes."""

    failure_threshold: int = Field(5, ge=1, le=1000)
    cooldown_seconds: float = Field(5.0, ge=0.05, le=300)


class IntrospectionConfig(SecretHolder, TrustedClaims):
    """OAuth2 token introspection (RFC 7662) for opaque tokens (docs/configuration.md): a token that is not a JWT
    is sent to `url`; JWTs never are, so no other issuer's token reaches this endpoint."""

    secret_fields = (SecretField("client_secret"),)

    #: Qualifies identities (`idp:alice`) unless `primary`; no JWT provider or API keys may have this name.
    name: Name
    #: The endpoint: https (http only to loopback), no redirects followed.
    url: Annotated[str, AfterValidator(_introspection_url)]
    #: Expected `iss` of an answer (when the answer has one) and the principal's issuer.
    issuer: str = Field(min_length=1)
    #: The answer's `aud` must name one of these.
    audiences: list[str] = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, min_length=1, repr=False)
    client_secret_file: ConfigPath | None = None
    client_secret_env: EnvironmentVariable | None = None
    client_auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    ca_file: ConfigPath | None = None
    timeout_seconds: float = Field(2.0, gt=0, le=30)
    #: Active answers are reused until `min(exp, now + cache_seconds)`: how long a revoked token keeps working.
    cache_seconds: float = Field(60.0, ge=0, le=3600)
    cache_size: int = Field(10_000, ge=0, le=1_000_000)
    #: Refused answers (inactive, expired, wrong audience) are reused this long.
    negative_cache_seconds: float = Field(5.0, ge=0, le=300)
    negative_cache_size: int = Field(1_000, ge=0, le=1_000_000)
    breaker: IntrospectionBreakerConfig = Field(default_factory=IntrospectionBreakerConfig)
    leeway_seconds: float = Field(30.0, ge=0, le=300)
    #: The claim the subject is read from (`client_id` for client-credentials tokens without `sub`).
    subject_claim: str = Field("sub", min_length=1)
    @model_validator(mode="after")
    def _has_secret(self) -> "IntrospectionConfig":
        if self.client_secret is None:
            raise ValueError("set one of client_secret_file, client_secret_env (or client_secret)")
        return self


class AuthenticationConfig(Strict):
    providers: list[JwtProviderConfig] = Field(default_factory=list)
    api_keys: ApiKeysConfig | None = None
    introspection: IntrospectionConfig | None = None
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

    @model_validator(mode="after")
    def _introspection_stands_apart(self) -> "AuthenticationConfig":
        """An introspected identity or issuer must not read as a JWT provider's or an API key's."""
        introspection = self.introspection
        if introspection is None:
            return self
        names = {introspection.name.lower(), introspection.issuer.lower()}
        for index, provider in enumerate(self.providers):
            if names & {provider.name.lower(), provider.issuer.lower()}:
                raise ValueError(f"introspection.name or issuer is also the name or issuer of providers[{index}]")
            if introspection.primary and provider.primary:
                raise ValueError(f"only one provider may be primary; introspection and providers[{index}] are")
        if self.api_keys is not None and self.api_keys.name.lower() in names:
            raise ValueError(f"introspection.name or issuer is api_keys.name {self.api_keys.name!r}")
        problem = header_value_problem(introspection.issuer, self.forward.max_header_value_bytes)
        if problem is not None:
            raise ValueError(f"introspection.issuer {problem}, so it cannot be forwarded unchanged")
        return self

    @model_validator(mode="after")
    def _api_keys_stand_apart(self) -> "AuthenticationConfig":
        """An API-key identity must not read as a JWT one, and the key must not reach the upstream or be taken
        for a token."""
        keys = self.api_keys
        if keys is None:
            return self
        for index, provider in enumerate(self.providers):
            if keys.name.lower() in (provider.name.lower(), provider.issuer.lower()):
                raise ValueError(f"api_keys.name {keys.name!r} is also the name or issuer of providers[{index}]")
        for index, source in enumerate(self.token_sources):
            if source.header == keys.header or (keys.authorization_scheme and source.header == "authorization"
                                                and (source.scheme or "").lower() == "apikey"):
                raise ValueError(f"token_sources[{index}] reads the API key's header as a token")
        if keys.authorization_scheme and not self.forward.strip_authorization:
            raise ValueError("api_keys.authorization_scheme needs forward.strip_authorization: true, or the key "
                             "would reach the upstream")
        return self


def _existing_policy_path(path: Path) -> Path:
    """Checked with the config, not only when the policies load, so the error names the line that points here."""
    if not path.exists():
        raise ValueError(f"{path} does not exist (a policy file, or a directory of *.yaml files)")
    return path


PolicyPath = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_existing_policy_path)]


class PolicyConfig(Strict):
    path: PolicyPath
    #: Poll the policy files and reload on change (SIGHUP always reloads).
    watch: bool = True
    watch_interval_seconds: float = Field(2.0, ge=0.1, le=3600)
    #: A candidate policy evaluated beside the live one and never enforced; differences are audited.
    shadow_path: PolicyPath | None = None


def _redact_pattern(value: str) -> str:
    """Run over client text in every event, so held to the same backtracking rule as policy regexes."""
    try:
        pattern = compile_safe(value)
    except UnsafeRegexError as error:
        raise ValueError(str(error)) from None
    except re.error as error:
        raise ValueError(f"invalid regular expression: {error}") from None
    if pattern.match(""):
        raise ValueError("matches the empty string (it would mask between every character)")
    return value


RedactPattern = Annotated[str, AfterValidator(_redact_pattern)]

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
    #: Extra regexes whose matches are masked in client text (path, host, header values); the built-in
    #: credential patterns (docs/audit.md#redaction) always apply.
    redact_patterns: list[RedactPattern] = Field(default_factory=list)
    #: Ed25519 private key (PEM) that signs checkpoints and the closing record; read at start (an unusable key
    #: stops it); unset: chains are unsigned.
    signing_key: ConfigPath | None = None
    #: A signed checkpoint after this many lines, or once the oldest unsigned line is this old.
    checkpoint_every_events: int = Field(1000, ge=1, le=1_000_000)
    checkpoint_every_seconds: float = Field(10.0, ge=0.01, le=3600)


class BreakerConfig(Strict):
    """Stops calling a failing limit store: after `failure_threshold` consecutive failures the breaker opens for
    `cooldown_seconds` (failure modes answer in microseconds), then one probe decides whether it closes."""

    failure_threshold: int = Field(3, ge=1, le=1000)
    cooldown_seconds: float = Field(1.0, ge=0.05, le=300)


class LeaseConfig(Strict):
    """Leased mode (`mode: leased` limits): how long a lease lives and how many units it may hold at most."""

    ttl_ms: int = Field(100, ge=1, le=60_000)
    max_tokens: int = Field(64, ge=1, le=100_000)


class QueueConfig(Strict):
    """Queued mode (`on_limit: queue` limits): how many Checks may wait for one key in this process."""

    max_waiting: int = Field(100, ge=1, le=100_000)


BACKEND_SCHEMES = ("memory://", "redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def _backend_problem(url: str) -> str | None:
    """Why `url` is no limit store; it never echoes the URL, which may carry a password."""
    if url.startswith(BACKEND_SCHEMES):
        return None
    return f"is not a limit-store URL: it must start with one of {', '.join(BACKEND_SCHEMES)}"


def url_carries_credentials(url: str) -> bool:
    """Whether a limit-store URL holds a password, however spelled: user info before an `@` (`redis://:pw@h`,
    `redis://user:pw@h`, a cluster's `redis+cluster://:pw@h1,h2`, percent-encoded or not) or a `password` query
    parameter. Any `@` counts: Redis URLs have no other use for one, so a user name alone is flagged too."""
    if "@" in url:
        return True
    query = url.partition("?")[2].partition("#")[0]
    return any(key.strip().lower() == "password" for key, _ in parse_qsl(query, keep_blank_values=True))


class RateLimitConfig(SecretHolder):
    secret_fields = (SecretField("backend", _backend_problem, url_carries_credentials),)

    #: `memory://` (in-process, per replica), `redis://host:port/db`, `rediss://...`, `unix:///path.sock`,
    #: or `redis+cluster://host:port,host:port`. `serve --rate-limit-backend` overrides it. A URL with a
    #: password belongs in `backend_file` or `backend_env` (docs/deployment.md#secrets).
    backend: str = Field("memory://", repr=False)
    #: A file holding the backend URL (a mounted Secret), read at start.
    backend_file: ConfigPath | None = None
    #: An environment variable holding the backend URL, read at start.
    backend_env: EnvironmentVariable | None = None
    #: Per call to the store; past it the limit's failure mode answers.
    timeout_ms: float = Field(50.0, ge=1, le=5000)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    lease: LeaseConfig = Field(default_factory=LeaseConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    #: Concurrent checks within this window share one Redis pipeline; 0 batches only what is already queued,
    #: null sends each check on its own.
    batch_window_us: float | None = Field(0, ge=0, le=100_000)
    #: Send `RateLimit-Policy`/`RateLimit` to the client on allowed responses too (always on 429).
    headers_on_allow: bool = True

    @field_validator("backend")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        problem = _backend_problem(value)
        if problem is not None:
            raise ValueError(f"the value {problem}")
        return value


class AdminConfig(Strict):
    """The admin API (protos/extauth/admin/v1/admin.proto, docs/operations.md) on a listener of its own."""

    #: `unix:PATH` (relative to the config file) or `tcp:HOST:PORT`. TCP only on loopback, or with server.tls
    #: requiring client certificates (`server.insecure` never applies here). Worker i of N: `name-i.ext`, port+i.
    listen: Annotated[str, AfterValidator(_listen_address)]
    #: Who may call it over TLS (`uri:`, `dns:`, `cn:` identities); empty: any client certificate that
    #: server.tls.client_ca_file verifies. Unix-socket callers are guarded by the socket's mode (0600).
    allowed_clients: list[ClientIdentity] = Field(default_factory=list)


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


#: What `tracing:` imports; the `otel` extra installs them (`pip install 'extauth[otel]'`).
OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
OTEL_MISSING = ("needs the OpenTelemetry packages, which are not installed: install the extra with "
                "`pip install 'extauth[otel]'` (docs/tracing.md)")


def otel_installed() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in OTEL_MODULES)
    except ImportError:  # a parent package is missing or blocked
        return False


def _collector_endpoint(value: str) -> str:
    """An OTLP/gRPC collector URL: `http://` (plaintext) or `https://` (TLS), a host, no user info, no path."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an OTLP/gRPC collector URL such as http://otel-collector:4317 (http or https)")
    if "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://host:port only: no user info, path or query")
    return value


class TracingConfig(Strict):
    """OpenTelemetry spans for each Check and its phases (docs/tracing.md); off when the section is absent."""

    #: The OTLP/gRPC collector: `http://host:4317` sends in plaintext (a collector beside the pod), `https://`
    #: over TLS verified against the system CAs.
    endpoint: Annotated[str, AfterValidator(_collector_endpoint)]
    #: Fraction of Checks traced when the Check call carries no `traceparent`; with one, its sampled flag decides.
    #: Low by default: a traced Check costs the SDK about 0.1 ms of CPU (docs/tracing.md#cost).
    sampling_ratio: float = Field(0.01, ge=0.0, le=1.0)
    #: `service.name` of the spans, how the tracing backend lists this service.
    service_name: Name = "extauth"

    @model_validator(mode="after")
    def _sdk_installed(self) -> "TracingConfig":
        if not otel_installed():
            raise ValueError(OTEL_MISSING)
        return self


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    authentication: AuthenticationConfig = Field(default_factory=AuthenticationConfig)
    policy: PolicyConfig
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig | None = None
    #: Off unless configured.
    admin: AdminConfig | None = None

    @field_validator("admin")
    @classmethod
    def _admin_listener_guarded(cls, admin: AdminConfig | None, info: ValidationInfo) -> AdminConfig | None:
        """Reload and the audit tail are for operators: over TCP only from this host, or through mutual TLS."""
        if admin is None or "server" not in info.data:
            return admin
        server: ServerConfig = info.data["server"]
        address = ListenAddress.parse(admin.listen)
        if address in [ListenAddress.parse(value) for value in server.listen]:
            raise ValueError(f"admin.listen {admin.listen} is also a server.listen address; give it its own")
        if address.local_only() or (server.tls is not None and server.tls.require_client_certificate):
            return admin
        raise ValueError(f"admin.listen {admin.listen} is reachable from other hosts without TLS client "
                         "certificates: use a unix socket or loopback, or configure server.tls with "
                         "require_client_certificate (server.insecure does not apply to the admin API)")

    @model_validator(mode="after")
    def _api_key_header_not_audited(self) -> "Config":
        """The key header is a credential whatever it is called: it never goes into an audit event."""
        keys = self.authentication.api_keys
        if keys is not None and keys.header in self.audit.headers:
            raise ValueError(f"audit.headers lists {keys.header!r}, the header API keys are read from")
        return self
