"""What `extauth serve` loads before it binds a socket, checked the same way (and without binding) by `validate`.

The schema checks what a config says; this checks the files it names as `serve` will use them: each provider's
JWKS file (parses, and holds a key for one of the provider's algorithms) or shared secret (long enough), a JWKS
CA bundle, the API key store, the audit signing key (Ed25519), the policy files (compiled, every error at once),
the audit output and the unix socket paths (creatable; an existing file that is not a socket is never replaced).
Key URLs are checked only as URLs (by the schema), unless `online`: then each remote key source is fetched once
with the real fetcher. Every problem is a ConfigIssue: the config file, the line of the field, the field, the message.

With an Envoy bootstrap (`validate --envoy-bootstrap`, default: the shipped envoy/envoy.yaml), a queued limit's
`max_wait` must be shorter than that bootstrap's ext_authz timeout: a longer wait would be cut off by Envoy (a
503) instead of ending in an allow or a 429.
"""

import asyncio
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from extauth.audit.signing import load_signing_key
from extauth.bundle.compiled import compile_policy
from extauth.clock import Clock, SystemClock
from extauth.config import ConfigError, ConfigIssue, LoadedConfig
from extauth.config.schema import JwtProviderConfig, ListenAddress, pem_certificates
from extauth.documents.apikeys import read_key_store
from extauth.documents.errors import sorted_issues
from extauth.documents.loader import policy_files, read_policies
from extauth.documents.policy import RateLimit
from extauth.identity.http import HttpFetcher, UrllibFetcher
from extauth.identity.jwks import JwksStore, load_jwks_file, load_shared_secret
from extauth.identity.keys import KeyLoadError
from extauth.unixsocket import creatable_problem, socket_path_problem


@dataclass
class StartupCheck:
    issues: list[ConfigIssue] = field(default_factory=list)
    #: "policy" / "shadow policy" -> the version `serve` would report, for those that compiled.
    policy_versions: dict[str, str] = field(default_factory=dict)
    #: With `online`: one line per remote key source that answered (provider, keys, URL).
    fetched: list[str] = field(default_factory=list)


def check_startup(loaded: LoadedConfig, clock: Clock | None = None,
                  envoy_bootstrap: Path | None = None) -> StartupCheck:
    """Everything `serve` reads at start, read now; issues sorted by file and line. With `envoy_bootstrap`, also
    every queued limit's `max_wait` against its ext_authz timeout."""
    check = StartupCheck()
    if envoy_bootstrap is not None:
        check.issues += _queue_wait_issues(loaded, envoy_bootstrap)
    check.issues += _key_issues(loaded)
    check.issues += _api_key_issues(loaded)
    check.issues += _audit_issues(loaded)
    check.issues += _listener_issues(loaded)
    for label, at in (("policy", ("policy", "path")), ("shadow policy", ("policy", "shadow_path"))):
        check.issues += _policy_issues(loaded, at, label, clock or SystemClock(), check.policy_versions)
    check.issues = sorted_issues(check.issues)
    return check


async def fetch_key_sources(loaded: LoadedConfig, check: StartupCheck, fetcher: HttpFetcher | None = None) -> None:
    """`validate --online`: fetch every provider's remote keys once (discovery included), as a refresh would."""
    fetcher = fetcher or UrllibFetcher()

    async def fetch(index: int, provider: JwtProviderConfig) -> None:
        store = JwksStore(provider, SystemClock(), fetcher)
        try:
            keys, url = await store.fetch_once()
        except KeyLoadError as error:
            source = "url" if provider.jwks is not None and provider.jwks.url else "oidc_discovery"
            check.issues.append(loaded.issue(("authentication", "providers", index, "jwks", source), str(error)))
        else:
            check.fetched.append(f"provider {provider.name!r}: {len(keys)} keys from {url}")

    providers = enumerate(loaded.config.authentication.providers)
    await asyncio.gather(*(fetch(index, provider) for index, provider in providers
                           if provider.jwks is not None and provider.jwks.file is None))
    check.issues = sorted_issues(check.issues)


#: Envoy's ext_authz timeout when the bootstrap sets none.
ENVOY_DEFAULT_AUTHZ_TIMEOUT_SECONDS = 0.2
_ENVOY_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def ext_authz_timeouts(bootstrap: Path) -> list[float]:
    """The timeout (seconds) of every ext_authz filter in an Envoy bootstrap, Envoy's default where none is set;
    raises ValueError when the file cannot be read as one."""
    import yaml

    try:
        document = yaml.safe_load(bootstrap.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the Envoy bootstrap: {error}") from error
    timeouts: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith("ext_authz.v3.ExtAuthz"):
                service = node.get("grpc_service") or (node.get("http_service") or {}).get("server_uri") or {}
                timeouts.append(_envoy_seconds(service.get("timeout")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return timeouts


def _envoy_seconds(value: object) -> float:
    """A protobuf Duration as Envoy's YAML spells it: `0.5s`, or `{seconds, nanos}`."""
    if value is None:
        return ENVOY_DEFAULT_AUTHZ_TIMEOUT_SECONDS
    if isinstance(value, dict):
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    found = _ENVOY_DURATION.match(str(value).strip())
    if not found:
        raise ValueError(f"{value!r} is not an Envoy duration such as 0.5s")
    return float(found.group(1))


def _queue_wait_issues(loaded: LoadedConfig, bootstrap: Path) -> list[ConfigIssue]:
    """A queued limit's `max_wait` must be shorter than every ext_authz timeout of the Envoy bootstrap."""
    try:
        timeouts = ext_authz_timeouts(bootstrap)
    except ValueError as error:
        return [ConfigIssue(bootstrap, None, "", str(error))]
    if not timeouts:
        return []
    timeout = min(timeouts)
    issues = []
    for attribute in ("path", "shadow_path"):
        path: Path | None = getattr(loaded.config.policy, attribute)
        if path is None or not path.exists():
            continue
        try:
            policy_set, _ = read_policies(path)
        except (ConfigError, OSError):
            continue  # the policy's own errors are reported by _policy_issues
        for document in policy_set.documents:
            for at, limit in _limits_of(document.document.routes):
                if limit.max_wait is not None and limit.max_wait >= timeout:
                    issues.append(document.issue(
                        (*at, "max_wait"), "max_wait",
                        f"{limit.max_wait:g}s is not shorter than the ext_authz timeout {timeout:g}s of {bootstrap}: "
                        "Envoy would cut the wait off with a 503 (lower max_wait, or raise the timeout: "
                        "docs/ratelimit.md#queued-mode)"))
    return issues


def _limits_of(routes: list) -> list[tuple[tuple[str | int, ...], RateLimit]]:  # type: ignore[type-arg]
    """Every limit of the routes, with its place in the document (`routes[i].limits[j]`, `...rules[k].limits[j]`)."""
    found = []
    for i, route in enumerate(routes):
        found += [(("routes", i, "limits", j), limit) for j, limit in enumerate(route.limits)]
        for k, rule in enumerate(route.rules):
            found += [(("routes", i, "rules", k, "limits", j), limit) for j, limit in enumerate(rule.limits)]
    return found


def _key_issues(loaded: LoadedConfig) -> list[ConfigIssue]:
    issues = []
    for index, provider in enumerate(loaded.config.authentication.providers):
        at = ("authentication", "providers", index)
        try:
            if provider.shared_secret_file is not None:
                load_shared_secret(provider.shared_secret_file, provider.algorithms)
            elif provider.jwks is not None and provider.jwks.file is not None:
                load_jwks_file(provider.jwks.file, provider.algorithms)
        except KeyLoadError as error:
            where = (*at, "shared_secret_file") if provider.shared_secret_file else (*at, "jwks", "file")
            issues.append(loaded.issue(where, str(error)))
        if provider.jwks is not None and provider.jwks.ca_file is not None:
            try:
                pem_certificates(provider.jwks.ca_file)
            except ValueError as error:
                issues.append(loaded.issue((*at, "jwks", "ca_file"), str(error)))
    return issues


def _api_key_issues(loaded: LoadedConfig) -> list[ConfigIssue]:
    """A missing store is reported at the config line naming it; the store's own errors name its file and line."""
    api_keys = loaded.config.authentication.api_keys
    if api_keys is None:
        return []
    if not api_keys.store.is_file():
        return [loaded.issue(("authentication", "api_keys", "store"),
                             f"{api_keys.store} is not a file (create an empty one, or use `extauth apikey create`)")]
    try:
        read_key_store(api_keys.store)
    except ConfigError as error:
        return error.issues
    return []


def _audit_issues(loaded: LoadedConfig) -> list[ConfigIssue]:
    audit = loaded.config.audit
    issues = []
    if audit.signing_key is not None:
        try:
            load_signing_key(audit.signing_key)
        except ValueError as error:
            issues.append(loaded.issue(("audit", "signing_key"), str(error)))
    if isinstance(audit.output, Path):
        problem = _writable_file_problem(audit.output)
        if problem is not None:
            issues.append(loaded.issue(("audit", "output"), problem))
    return issues


def _listener_issues(loaded: LoadedConfig) -> list[ConfigIssue]:
    server = loaded.config.server
    base = loaded.path.parent
    listeners = [(("server", "listen", index), ListenAddress.parse(text, base)) for index, text in
                 enumerate(server.listen)]
    if server.metrics_listen:
        listeners.append((("server", "metrics_listen"), ListenAddress.parse(server.metrics_listen, base)))
    if loaded.config.admin is not None:
        listeners.append((("admin", "listen"), ListenAddress.parse(loaded.config.admin.listen, base)))
    issues = []
    for at, address in listeners:
        for worker in range(server.workers):
            path = address.for_worker(worker, server.workers).path
            problem = socket_path_problem(path) if path is not None else None
            if problem is not None:
                issues.append(loaded.issue(at, problem))
    return issues


def _writable_file_problem(path: Path) -> str | None:
    """The audit output: appended to if it exists, else created (with its missing parent directories)."""
    if not path.exists():
        return creatable_problem(path)
    if path.is_dir():
        return f"{path} is a directory"
    if not os.access(path, os.W_OK):
        return f"cannot write {path}: permission denied"
    return None


def _policy_issues(loaded: LoadedConfig, at: tuple[str, str], label: str, clock: Clock,
                   versions: dict[str, str]) -> list[ConfigIssue]:
    """A policy path that is missing or holds no policy files is reported at the config line naming it; the
    policy files' own errors name their file and line."""
    path: Path | None = getattr(loaded.config.policy, at[1])
    if path is None:
        return []
    if not path.exists():
        return [loaded.issue(at, f"{path} does not exist (a policy file, or a directory of *.yaml files)")]
    try:
        if not policy_files(path):
            return [loaded.issue(at, f"{path} holds no policy files (*.yaml, *.yml)")]
    except OSError as error:
        return [loaded.issue(at, f"cannot list {path}: {error.strerror}")]
    try:
        versions[label] = compile_policy(path, clock).version
    except ConfigError as error:
        return error.issues
    return []
