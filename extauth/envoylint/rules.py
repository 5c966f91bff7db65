"""The security rules of `extauth envoy-lint`, each a finding with the dotted path of the offending field and a
one-line fix (docs/envoy-lint.md explains every rule and why it matters).

They read envoy-data-plane's typed models (loader.py), never the raw YAML, so every spelling Envoy accepts for a
field (camelCase or snake_case, a Duration as text or as a mapping) is judged the same way.
"""

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import betterproto2
from envoy_data_plane.envoy.config.route.v3 import FilterConfig
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz, ExtAuthzPerRoute
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerPathWithEscapedSlashesAction,
)
from envoy_data_plane.envoy.extensions.transport_sockets.quic.v3 import QuicDownstreamTransport
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CommonTlsContext,
    DownstreamTlsContext,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import HttpProtocolOptions

from extauth.envoylint.loader import FieldPath

#: The escaped-slash actions under which the path ext_authz authorises is the path the upstream receives:
#: rejected, or unescaped (and normalised) before anything decides. KEEP_UNCHANGED and the default (which is
#: KEEP_UNCHANGED today) authorise `/public%2F..%2Fadmin` as a public path that the upstream may decode as /admin.
SAFE_ESCAPED_SLASH_ACTIONS = frozenset({
    HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST,
    HttpConnectionManagerPathWithEscapedSlashesAction.UNESCAPE_AND_REDIRECT,
    HttpConnectionManagerPathWithEscapedSlashesAction.UNESCAPE_AND_FORWARD,
})

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    rule: str
    path: FieldPath
    message: str
    fix: str
    severity: str = ERROR


#: Whether a route (its RouteMatch, its virtual host's domains) that skips ext_authz is public in the policy: None
#: when every request it matches is allowed anonymously, else why not. Given only with `--policy`.
PublicCheck = Callable[[Any, list[str]], str | None]

#: Every rule id, for `--help`, waivers and docs.
RULES = {
    "admin-not-loopback": "the admin API listens beyond loopback",
    "listener-plaintext": "a listener filter chain without TLS",
    "upstream-tls-unverified": "an upstream TLS cluster that does not verify the server certificate",
    "upstream-tls-no-sni": "an upstream TLS cluster that sends no SNI",
    "ext-authz-failure-mode-allow": "ext_authz lets requests through when extauth fails",
    "ext-authz-no-timeout": "ext_authz without an explicit, non-zero timeout",
    "ext-authz-cluster-not-http2": "the ext_authz gRPC cluster does not speak HTTP/2",
    "ext-authz-missing": "an HTTP connection manager without ext_authz",
    "ext-authz-partial": "ext_authz disabled by default or only for a fraction of requests",
    "route-skips-ext-authz": "a route that disables ext_authz without being public in the policy",
    "normalize-path-off": "normalize_path is not on",
    "merge-slashes-off": "merge_slashes is not on",
    "escaped-slashes-not-rejected": "%2F / %5C in paths reach the upstream unchanged",
    "xff-trust": "the client address is taken from client-supplied X-Forwarded-For at the edge",
    "no-access-log": "an HTTP connection manager without an access log",
    "invalid-waiver": "an `# envoy-lint:` comment that is not `allow RULE[, RULE] -- reason`",
}


@dataclass
class Options:
    #: Listener names allowed to serve without TLS (`--allow-plaintext-listener`, a development allowance).
    plaintext_listeners: frozenset[str] = frozenset()
    public_check: PublicCheck | None = None


@dataclass
class _Linter:
    bootstrap: Any
    options: Options
    findings: list[Finding] = field(default_factory=list)

    def add(self, rule: str, path: FieldPath, message: str, fix: str, severity: str = ERROR) -> None:
        self.findings.append(Finding(rule, path, message, fix, severity))

    def run(self) -> list[Finding]:
        self.admin()
        resources = self.bootstrap.static_resources
        if resources is not None:
            self.clusters = {cluster.name: cluster for cluster in resources.clusters}
            for index, listener in enumerate(resources.listeners):
                self.listener(("static_resources", "listeners", index), listener)
            for index, cluster in enumerate(resources.clusters):
                self.cluster(("static_resources", "clusters", index), cluster)
        return self.findings

    def admin(self) -> None:
        admin = self.bootstrap.admin
        if admin is None or admin.address is None or admin.address.socket_address is None:
            return  # no admin, or a unix socket: local by construction
        host = admin.address.socket_address.address
        if not _is_loopback(host):
            self.add("admin-not-loopback", ("admin", "address", "socket_address", "address"),
                     f"the admin API listens on {host!r}: anyone who reaches it can drain listeners, change log "
                     "levels and read the config", "bind admin to 127.0.0.1 (or a unix socket: address.pipe)")

    def listener(self, at: FieldPath, listener: Any) -> None:
        chains = [((*at, "filter_chains", index), chain) for index, chain in enumerate(listener.filter_chains)]
        if listener.default_filter_chain is not None:
            chains.append(((*at, "default_filter_chain"), listener.default_filter_chain))
        edge = not _is_local(listener.address)
        for chain_at, chain in chains:
            tls = _unpack(chain.transport_socket.typed_config) if chain.transport_socket is not None else None
            if not isinstance(tls, DownstreamTlsContext | QuicDownstreamTransport) \
                    and listener.name not in self.options.plaintext_listeners:
                self.add("listener-plaintext", (*chain_at, "transport_socket"),
                         f"listener {listener.name!r} accepts plaintext: tokens and identity headers cross the "
                         "network readable", "add a transport_socket with a DownstreamTlsContext (or, for a "
                         f"development listener, --allow-plaintext-listener {listener.name or 'NAME'})")
            for index, network_filter in enumerate(chain.filters):
                manager = _unpack(network_filter.typed_config)
                if isinstance(manager, HttpConnectionManager):
                    self.connection_manager((*chain_at, "filters", index, "typed_config"), manager, edge)

    def connection_manager(self, at: FieldPath, manager: HttpConnectionManager, edge: bool) -> None:
        if not manager.access_log:
            self.add("no-access-log", (*at, "access_log"),
                     "requests through this connection manager leave no access log (nor completion events)",
                     "add an access_log (docs/audit.md: a JSON file log and the gRPC log to extauth)")
        if not _forwards(manager):
            return  # every route answers itself (a probe listener): nothing upstream for ext_authz to guard
        if manager.normalize_path is not True:
            self.add("normalize-path-off", (*at, "normalize_path"),
                     "paths are not normalised before ext_authz: `/public/../admin` is authorised as a public path",
                     "set normalize_path: true")
        if not manager.merge_slashes:
            self.add("merge-slashes-off", (*at, "merge_slashes"),
                     "`//admin` is authorised as written and may reach the upstream as `/admin`",
                     "set merge_slashes: true")
        if manager.path_with_escaped_slashes_action not in SAFE_ESCAPED_SLASH_ACTIONS:
            self.add("escaped-slashes-not-rejected", (*at, "path_with_escaped_slashes_action"),
                     f"escaped slashes are {manager.path_with_escaped_slashes_action.name}: `/public%2F..%2Fadmin` "
                     "is authorised as one path and may be decoded as another upstream",
                     "set path_with_escaped_slashes_action: REJECT_REQUEST")
        if edge and manager.use_remote_address is not True:
            self.add("xff-trust", (*at, "use_remote_address"),
                     "use_remote_address is off on a listener reachable from the network: the client address "
                     "(source_cidrs, audit, rate-limit keys) is read from X-Forwarded-For, which the client writes",
                     "set use_remote_address: true (behind a trusted proxy: waive it, naming the proxy)")
        if edge and manager.xff_num_trusted_hops > 0:
            self.add("xff-trust", (*at, "xff_num_trusted_hops"),
                     f"{manager.xff_num_trusted_hops} X-Forwarded-For hop(s) are trusted on a listener reachable "
                     "from the network: without a proxy in front, the client chooses its own address",
                     "set xff_num_trusted_hops: 0, or waive it naming the proxies that append X-Forwarded-For")
        authz_filters = [(index, http_filter) for index, http_filter in enumerate(manager.http_filters)
                         if isinstance(_unpack(http_filter.typed_config), ExtAuthz)]
        if not authz_filters:
            self.add("ext-authz-missing", (*at, "http_filters"),
                     "no ext_authz filter: every request through this connection manager is unchecked",
                     "add envoy.filters.http.ext_authz before the router")
        for index, http_filter in authz_filters:
            self.ext_authz((*at, "http_filters", index), http_filter)
        if manager.route_config is not None:
            names = frozenset(http_filter.name for _, http_filter in authz_filters)
            self.routes((*at, "route_config"), manager.route_config, names)

    def ext_authz(self, at: FieldPath, http_filter: Any) -> None:
        config: ExtAuthz = _unpack(http_filter.typed_config)
        config_at = (*at, "typed_config")
        if http_filter.disabled:
            self.add("ext-authz-partial", (*at, "disabled"),
                     "ext_authz is disabled unless a route enables it: a route that forgets to is unchecked",
                     "remove `disabled: true`")
        if config.filter_enabled is not None or config.filter_enabled_metadata is not None:
            field_name = "filter_enabled" if config.filter_enabled is not None else "filter_enabled_metadata"
            self.add("ext-authz-partial", (*config_at, field_name),
                     f"{field_name} lets some requests skip ext_authz (a runtime value or metadata decides)",
                     f"remove {field_name}")
        if config.failure_mode_allow:
            self.add("ext-authz-failure-mode-allow", (*config_at, "failure_mode_allow"),
                     "failure_mode_allow: true lets every request through unauthenticated while extauth is down, "
                     "slow or unreachable", "set failure_mode_allow: false (and status_on_error 503)")
        if config.grpc_service is not None:
            self.ext_authz_timeout((*config_at, "grpc_service", "timeout"), config.grpc_service.timeout)
            envoy_grpc = config.grpc_service.envoy_grpc
            if envoy_grpc is not None:
                self.ext_authz_cluster((*config_at, "grpc_service", "envoy_grpc", "cluster_name"),
                                       envoy_grpc.cluster_name)
        elif config.http_service is not None and config.http_service.server_uri is not None:
            self.ext_authz_timeout((*config_at, "http_service", "server_uri", "timeout"),
                                   config.http_service.server_uri.timeout)

    def ext_authz_timeout(self, at: FieldPath, timeout: timedelta | None) -> None:
        if timeout is None:
            self.add("ext-authz-no-timeout", at, "the ext_authz timeout is implicit (Envoy's 200ms default): the "
                     "Check budget is nowhere written down", "set an explicit timeout, e.g. timeout: 0.5s")
        elif timeout <= timedelta(0):
            self.add("ext-authz-no-timeout", at, "timeout 0s means no deadline: a stuck extauth holds every request "
                     "open", "set a positive timeout, e.g. timeout: 0.5s")

    def ext_authz_cluster(self, at: FieldPath, name: str) -> None:
        cluster = self.clusters.get(name)
        if cluster is None:
            self.add("ext-authz-cluster-not-http2", at, f"cluster {name!r} is not in static_resources.clusters: "
                     "its protocol cannot be checked", "define the ext_authz cluster statically")
        elif not _speaks_http2(cluster):
            self.add("ext-authz-cluster-not-http2", at, f"cluster {name!r} speaks HTTP/1.1: gRPC Checks fail and "
                     "every request is refused (or let through with failure_mode_allow)",
                     "give the cluster typed_extension_protocol_options HttpProtocolOptions with "
                     "explicit_http_config.http2_protocol_options: {}")

    def routes(self, at: FieldPath, config: Any, authz_names: frozenset[str]) -> None:
        """A route's effective per-filter config is the most specific one (route, then virtual host, then route
        configuration), so a virtual host that disables ext_authz disables it for each route that says nothing."""
        config_entry = _skipping_entry(at, config.typed_per_filter_config, authz_names)
        for host_index, host in enumerate(config.virtual_hosts):
            host_at = (*at, "virtual_hosts", host_index)
            host_entry = _skipping_entry(host_at, host.typed_per_filter_config, authz_names) or config_entry
            for route_index, route in enumerate(host.routes):
                route_at = (*host_at, "routes", route_index)
                entries = [_skipping_entry(route_at, route.typed_per_filter_config, authz_names)]
                action = route.route
                if action is not None and action.weighted_clusters is not None:
                    for weight_index, weighted in enumerate(action.weighted_clusters.clusters):
                        weight_at = (*route_at, "route", "weighted_clusters", "clusters", weight_index)
                        entries.append(_skipping_entry(weight_at, weighted.typed_per_filter_config, authz_names))
                skipping = [entry for entry in entries if entry is not None]
                if entries[0] is None and route.typed_per_filter_config.keys().isdisjoint(authz_names) \
                        and host_entry is not None:
                    skipping.append(host_entry)
                for entry_at in dict.fromkeys(skipping):
                    self.route_skips(entry_at, route, host.domains)

    def route_skips(self, at: FieldPath, route: Any, domains: list[str]) -> None:
        spelled = _match_text(route.match)
        check = self.options.public_check
        if check is None:
            self.add("route-skips-ext-authz", at, f"route {spelled} skips ext_authz: review that it is public",
                     "run with --policy DIR to check it against the policy, or remove the disabling config",
                     WARNING)
            return
        problem = check(route.match, domains)
        if problem is not None:
            self.add("route-skips-ext-authz", at, f"route {spelled} skips ext_authz but is not public in the "
                     f"policy: {problem}", "remove `disabled: true`, or make the path public in the policy")

    def cluster(self, at: FieldPath, cluster: Any) -> None:
        sockets = [((*at, "transport_socket"), cluster.transport_socket)]
        sockets += [((*at, "transport_socket_matches", index, "transport_socket"), match.transport_socket)
                    for index, match in enumerate(cluster.transport_socket_matches)]
        for socket_at, socket in sockets:
            tls = _unpack(socket.typed_config) if socket is not None else None
            if isinstance(tls, UpstreamTlsContext):
                self.upstream_tls((*socket_at, "typed_config"), tls, cluster)

    def upstream_tls(self, at: FieldPath, tls: UpstreamTlsContext, cluster: Any) -> None:
        common = tls.common_tls_context or CommonTlsContext()
        context_at = (*at, "common_tls_context")
        verifies, where = _verifies_server(common)
        if not verifies:
            self.add("upstream-tls-unverified", (*context_at, *where),
                     f"cluster {cluster.name!r} accepts any server certificate: a man in the middle reads the "
                     "identity headers extauth adds", "set common_tls_context.validation_context.trusted_ca (and "
                     "match_typed_subject_alt_names)")
        if not tls.sni and not _auto_sni(cluster):
            self.add("upstream-tls-no-sni", (*at, "sni"),
                     f"cluster {cluster.name!r} sends no SNI: a shared upstream may answer with another name's "
                     "certificate (or refuse)", "set sni: to the upstream's DNS name (or auto_sni)")


def lint(bootstrap: Any, options: Options) -> list[Finding]:
    return _Linter(bootstrap, options).run()


def _unpack(packed: Any) -> Any:
    return packed.unpack() if packed is not None and packed.type_url else None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # Envoy needs an IP here; a name (or `127.1`) is not known to stay local
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _is_local(address: Any) -> bool:
    """A listener only local processes reach: on a unix socket, an internal listener, or bound to loopback."""
    if address is None or address.pipe is not None or address.envoy_internal_address is not None:
        return True
    return address.socket_address is not None and _is_loopback(address.socket_address.address)


def _forwards(manager: HttpConnectionManager) -> bool:
    """Whether any request can reach an upstream: routes from RDS or scoped routes are assumed to; an inline route
    configuration forwards when one of its routes has a route action (not a direct_response or redirect)."""
    if manager.route_config is None:
        return True
    return any(route.route is not None for host in manager.route_config.virtual_hosts for route in host.routes)


def _speaks_http2(cluster: Any) -> bool:
    if cluster.http2_protocol_options is not None:
        return True
    for packed in cluster.typed_extension_protocol_options.values():
        options = _unpack(packed)
        if isinstance(options, HttpProtocolOptions) and options.explicit_http_config is not None \
                and options.explicit_http_config.http2_protocol_options is not None:
            return True
    return False


def _auto_sni(cluster: Any) -> bool:
    protocol = [cluster.upstream_http_protocol_options]
    protocol += [options.upstream_http_protocol_options
                 for options in map(_unpack, cluster.typed_extension_protocol_options.values())
                 if isinstance(options, HttpProtocolOptions)]
    return any(options is not None and options.auto_sni for options in protocol)


def _verifies_server(common: Any) -> tuple[bool, FieldPath]:
    """Whether the server certificate is checked against a CA, and the field to point at when it is not."""
    if common.validation_context_sds_secret_config is not None \
            or common.validation_context_certificate_provider is not None \
            or common.validation_context_certificate_provider_instance is not None:
        return True, ()
    context, at = common.validation_context, ("validation_context",)
    combined = common.combined_validation_context
    if combined is not None:
        if combined.validation_context_sds_secret_config is not None \
                or combined.validation_context_certificate_provider is not None \
                or combined.validation_context_certificate_provider_instance is not None:
            return True, ()
        context, at = combined.default_validation_context, ("combined_validation_context",
                                                            "default_validation_context")
    if context is None:
        return False, at
    if context.trust_chain_verification.name == "ACCEPT_UNTRUSTED":
        return False, (*at, "trust_chain_verification")
    has_ca = (context.trusted_ca is not None and betterproto2.which_one_of(context.trusted_ca, "specifier")[0]) \
        or context.ca_certificate_provider_instance is not None or context.system_root_certs is not None \
        or context.custom_validator_config is not None
    return bool(has_ca), (*at, "trusted_ca")


def _skipping_entry(at: FieldPath, configs: dict[str, Any], authz_names: frozenset[str]) -> FieldPath | None:
    """The typed_per_filter_config entry that turns ext_authz off here: an ExtAuthzPerRoute `disabled: true`, or
    a FilterConfig `disabled: true` on the ext_authz filter's name."""
    for name, packed in configs.items():
        config = _unpack(packed)
        if isinstance(config, ExtAuthzPerRoute) and config.disabled:
            return (*at, "typed_per_filter_config", name)
        if isinstance(config, FilterConfig) and config.disabled \
                and (name in authz_names or isinstance(_unpack(config.config), ExtAuthzPerRoute)):
            return (*at, "typed_per_filter_config", name)
    return None


def _match_text(match: Any) -> str:
    kind, value = betterproto2.which_one_of(match, "path_specifier")
    if kind == "safe_regex":
        value = value.regex
    elif kind == "path_match_policy":
        value = "(a path_match_policy extension)"
    return f"{kind}: {value}" if kind else "(no path specifier)"
