"""One extauth process: the grpc.aio server with Check, health and reflection, and a graceful stop.

Health is NOT_SERVING until policy and every provider's keys are loaded, so Kubernetes readiness and
Envoy health checks never route to an instance that would answer 503s; on SIGTERM it turns NOT_SERVING,
stops accepting, lets in-flight checks finish within the grace period, and exits 0.
"""

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from extauth import NATIVE_STATUS
from extauth.accesslog import SERVICE_NAME as ACCESS_LOG_SERVICE
from extauth.accesslog import AccessLogServicer
from extauth.admin.service import SERVICE_NAME as ADMIN_SERVICE
from extauth.admin.service import AdminServicer, ServedProcess
from extauth.admin.v1 import admin_pb2_grpc
from extauth.audit.redact import Redactor
from extauth.audit.writer import AuditWriter
from extauth.bundle.store import PolicyStore
from extauth.callers import CallerGate
from extauth.clock import SystemClock
from extauth.config.schema import Config, ListenAddress, ServerTlsConfig
from extauth.identity.authenticator import Authenticator
from extauth.metrics import REDIS, CheckMetrics
from extauth.metrics.collector import ExtauthCollector
from extauth.metrics.http import MetricsServer
from extauth.pipeline import Pipeline
from extauth.ratelimit import CircuitBreaker, RateLimiter, open_storage
from extauth.ratelimit.lease import LeaseBook
from extauth.ratelimit.phase import RateLimitPhase
from extauth.respond import Responder
from extauth.servicer import AuthorizationServicer
from extauth.unixsocket import SocketIdentity, claim_socket_path, remove_own_socket, socket_identity

if TYPE_CHECKING:
    from extauth.tracing import CheckTracer

log = structlog.get_logger("extauth.server")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_READINESS_POLL_SECONDS = 0.05
_ORPHAN_POLL_SECONDS = 1.0
#: On stop, how long open access-log streams stay open for the entries Envoy is still flushing.
ACCESS_LOG_DRAIN_SECONDS = 1.0
GRPC_OPTIONS = [
    # Each worker owns its socket (see ListenAddress.for_worker); never share a port by accident.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Envoy keeps its ext_authz connection alive with pings; do not answer them with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
]


class ExtauthServer:
    def __init__(self, config: Config, config_path: Path, worker_index: int = 0) -> None:
        self._config = config
        self._addresses = [
            address.for_worker(worker_index, config.server.workers)
            for address in config.server.addresses(config_path.parent)
        ]
        self.instance = f"{socket.gethostname()}/{worker_index}"
        clock = SystemClock()
        self.started_at = clock.now()
        audit = config.audit
        redactor = Redactor(audit.headers, audit.include_query, audit.redact_patterns)
        self.audit = AuditWriter.from_config(audit, self.instance, redactor)
        # Reloads, IdP and Redis outages and recoveries go into the audit stream beside the decisions.
        notify = self.audit.record
        self.policy = PolicyStore(config.policy.path, clock, config.policy.shadow_path, notify)
        self.authenticator = Authenticator(config.authentication, clock, notify=notify)
        self.authenticator.load_key_files()  # every file is read before any socket is bound
        limits = config.rate_limit
        self.rate_limiter = RateLimiter(
            open_storage(limits.backend, timeout_ms=limits.timeout_ms), clock, timeout_ms=limits.timeout_ms,
            breaker=CircuitBreaker(clock, limits.breaker.failure_threshold, limits.breaker.cooldown_seconds),
            batch_window_us=limits.batch_window_us, metrics=REDIS, notify=notify,
            leases=LeaseBook(limits.lease.ttl_ms, limits.lease.max_tokens), queue_max_waiting=limits.queue.max_waiting)
        api_keys = config.authentication.api_keys
        responder = Responder(config.authentication.forward, (api_keys.header,) if api_keys is not None else ())
        self.tracer = _check_tracer(config, self.instance)
        self.pipeline = Pipeline(self.authenticator, self.policy, responder,
                                 self.audit, self.instance, redactor=redactor, metrics=CheckMetrics(),
                                 rate_limit=RateLimitPhase(self.rate_limiter, limits.headers_on_allow),
                                 tracer=self.tracer)
        self.callers = CallerGate(config.server.tls)
        self.access_log = (AccessLogServicer(self.audit, self.instance, redactor, self.callers)
                           if audit.completion_events else None)
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server(options=GRPC_OPTIONS,
                                       maximum_concurrent_rpcs=config.server.max_concurrent_checks)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(self.pipeline, self.callers), self._server)
        services = [AUTHORIZATION_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
        if self.access_log is not None:
            als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.access_log, self._server)
            services.append(ACCESS_LOG_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(services, self._server)
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        self.metrics_registry.register(ExtauthCollector(
            checks=self.pipeline.metrics, redis=REDIS, audit=self.audit, access_log=self.access_log,
            policy=self.policy, key_stores=self.authenticator.key_stores, clock=clock, pipeline=self.pipeline,
            introspector=self.authenticator.introspector,
            limiter=self.rate_limiter, callers=self.callers))
        self.metrics_server = None
        if config.server.metrics_listen:
            metrics_address = ListenAddress.parse(config.server.metrics_listen, config_path.parent)
            self.metrics_server = MetricsServer(self.metrics_registry,
                                                metrics_address.for_worker(worker_index, config.server.workers))
        self._admin_address, self._admin_server = self._admin_listener(config, config_path, worker_index, clock)
        self._ready = False
        self._background: list[asyncio.Task[None]] = []
        #: Unix sockets this process created, by path: removed on stop only if the file is still that socket.
        self._created_sockets: dict[Path, SocketIdentity] = {}

    def _admin_listener(self, config: Config, config_path: Path, worker_index: int, clock: SystemClock,
                        ) -> tuple[ListenAddress | None, grpc.aio.Server | None]:
        """The admin API on a server of its own: its calls never queue behind Checks, nor Checks behind it."""
        if config.admin is None:
            return None, None
        address = ListenAddress.parse(config.admin.listen, config_path.parent)
        process = ServedProcess(
            instance=self.instance, started_at=self.started_at, policy=self.policy,
            authentication=config.authentication, authenticator=self.authenticator, limiter=self.rate_limiter,
            audit=self.audit, clock=clock, ready=lambda: self.ready, reload=self.reload_now)
        server = grpc.aio.server(options=GRPC_OPTIONS)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(process, config.admin), server)
        reflection.enable_server_reflection([ADMIN_SERVICE, reflection.SERVICE_NAME], server)
        return address.for_worker(worker_index, config.server.workers), server

    async def start(self) -> None:
        await self.audit.start()
        credentials = _server_credentials(self._config.server.tls)
        for address in self._addresses:
            self._bind(self._server, address, credentials)
        if self._admin_server is not None and self._admin_address is not None:
            # Reload and the audit tail are for extauth's own user: the socket is born 0600 (no chmod window).
            self._bind(self._admin_server, self._admin_address, credentials, private=True)
            await self._admin_server.start()
            log.info("admin_listening", address=str(self._admin_address), instance=self.instance)
        self._warn_about_open_doors()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        log.info("listening", addresses=[str(address) for address in self._addresses], instance=self.instance,
                 policy_version=self.policy.current.version, code=NATIVE_STATUS)
        if self.metrics_server is not None:
            await self.metrics_server.start()
        await self.authenticator.start()
        await self.rate_limiter.warm_up()
        self._background.append(asyncio.create_task(self._become_ready()))
        if self._config.policy.watch:
            self._background.append(asyncio.create_task(
                self.policy.watch(self._config.policy.watch_interval_seconds)))

    def _bind(self, server: grpc.aio.Server, address: ListenAddress, credentials: grpc.ServerCredentials | None,
              private: bool = False) -> None:
        _bind(server, address, credentials, private)
        if address.kind == "unix" and address.path is not None:
            self._created_sockets[address.path] = socket_identity(address.path)

    def _warn_about_open_doors(self) -> None:
        """`insecure: true` is a written decision, but one every start repeats, in the log and the audit trail."""
        for address in self._addresses:
            if self._config.server.unauthenticated(address):
                transport = "plaintext" if self._config.server.tls is None else "tls_without_client_certificate"
                log.warning("insecure_listener", address=str(address), transport=transport, instance=self.instance)
                self.audit.record("insecure_listener", address=str(address), transport=transport)
        if self.access_log is not None and not self.callers.accepts_access_logs_over_tls and not any(
                address.kind == "unix" for address in self._addresses):
            log.warning("access_logs_refused_everywhere", instance=self.instance,
                        hint="completion events need a unix listener or server.tls.access_log_clients")

    def reload_policy(self) -> None:
        """SIGHUP: reload now (off the loop, after any reload in progress); a broken policy is rejected and the
        current one keeps serving. The API key store is read again the same way."""
        self.policy.request_reload("sighup")
        self.authenticator.request_api_key_reload("sighup")

    async def reload_now(self) -> bool:
        """The admin API's Reload: like SIGHUP, but the caller waits for the policy reload's result."""
        self.authenticator.request_api_key_reload("admin")
        return await self.policy.reload("admin")

    @property
    def ready(self) -> bool:
        return self._ready


    async def _become_ready(self) -> None:
        while not self.authenticator.ready:
            await asyncio.sleep(_READINESS_POLL_SECONDS)
        frozen = freeze_startup_heap()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        log.info("ready", instance=self.instance, frozen_objects=frozen)

    async def _set_health(self, status: int) -> None:
        for service in ("", AUTHORIZATION_SERVICE):
            await self.health.set(service, status)

    async def stop(self) -> None:
        grace = self._config.server.grace_period_seconds
        log.info("stopping", grace_period_seconds=grace, instance=self.instance)
        await self.health.enter_graceful_shutdown()
        if self._admin_server is not None:
            await self._admin_server.stop(0)  # an open audit tail must not hold the stop for the grace period
        stopping = asyncio.create_task(self._server.stop(grace))
        if self.access_log is not None:
            if self.access_log.stats.streams_open:
                await asyncio.wait({stopping}, timeout=min(ACCESS_LOG_DRAIN_SECONDS, grace))
            self.access_log.close_streams()
        await stopping
        for task in self._background:
            task.cancel()
        await self.authenticator.stop()
        await self.rate_limiter.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await self.audit.close()  # every queued event is written before the process exits
        if self.tracer is not None:  # queued spans go out too, within the exporter's timeout
            await asyncio.to_thread(self.tracer.shutdown)
        self._remove_created_sockets()
        log.info("stopped", instance=self.instance, audit_written=sum(self.audit.stats.written.values()),
                 audit_dropped=self.audit.stats.dropped)

    def _remove_created_sockets(self) -> None:
        """A socket file this process created goes; anything since put in its place by someone else stays."""
        for path, identity in self._created_sockets.items():
            remove_own_socket(path, identity)
        self._created_sockets.clear()


def _check_tracer(config: Config, instance: str) -> "CheckTracer | None":
    """The OpenTelemetry packages (the `otel` extra) are imported only when `tracing:` is configured."""
    if config.tracing is None:
        return None
    from extauth.tracing import CheckTracer

    return CheckTracer(config.tracing, instance)


@contextlib.contextmanager
def _owner_only_files() -> Iterator[None]:
    """Files and sockets created meanwhile get mode 0600 at most (the umask is per process: keep this short)."""
    previous = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(previous)


def _server_credentials(tls: ServerTlsConfig | None) -> grpc.ServerCredentials | None:
    if tls is None:
        return None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
        require_client_auth=tls.require_client_certificate)


def _bind(server: grpc.aio.Server, address: ListenAddress, credentials: grpc.ServerCredentials | None,
          private: bool = False) -> None:
    """TCP listeners use the TLS credentials when there are some; unix sockets never do. A `private` unix socket
    is created with mode 0600 (its directory, when made here, keeps the usual mode)."""
    if address.kind == "unix":
        assert address.path is not None
        claim_socket_path(address.path)
    try:
        with _owner_only_files() if private else contextlib.nullcontext():
            bound = _add_port(server, address, credentials)
    except RuntimeError as exc:  # grpc's text ends in advice about GRPC_VERBOSITY; its log line has the cause
        raise OSError(f"cannot listen on {address}: {str(exc).split(';')[0]}") from None
    if address.kind == "tcp" and bound == 0:
        raise OSError(f"cannot listen on {address}")


def _add_port(server: grpc.aio.Server, address: ListenAddress, credentials: grpc.ServerCredentials | None) -> int:
    if address.kind == "tcp" and credentials is not None:
        return server.add_secure_port(address.grpc_target(), credentials)
    return server.add_insecure_port(address.grpc_target())


def freeze_startup_heap() -> int:
    """Move what start-up allocated (configuration, compiled policies, keys, protobuf and gRPC modules) out of
    the cyclic collector's reach, and return how many objects that is.

    It lives as long as the process, yet every full collection would walk it: ~80k objects, ~40 ms during
    which the event loop answers no Check (measured through Envoy, bench/README.md); frozen, a full collection
    takes under 1 ms. Objects allocated later (reloaded policies, caches) are collected as usual.
    """
    gc.collect()  # garbage from start-up is freed, not frozen
    gc.freeze()
    return gc.get_freeze_count()


async def serve(config: Config, config_path: Path, worker_index: int = 0, supervised: bool = False) -> int:
    """Run until SIGTERM or SIGINT (or, for a supervised worker, until its supervisor dies); returns the exit code."""
    server = ExtauthServer(config, config_path, worker_index)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_policy)
    orphan_watch = asyncio.create_task(_stop_when_orphaned(stopping)) if supervised else None
    try:
        await server.start()
        await stopping.wait()
    finally:  # also when start fails half-way: the audit trail is closed and the sockets it made are removed
        await server.stop()
        if orphan_watch:
            orphan_watch.cancel()
    return 0


async def _stop_when_orphaned(stopping: asyncio.Event) -> None:
    """A worker whose supervisor was killed outright must not keep serving on its own."""
    supervisor = os.getppid()
    while os.getppid() == supervisor:
        await asyncio.sleep(_ORPHAN_POLL_SECONDS)
    log.error("supervisor_gone", supervisor_pid=supervisor)
    stopping.set()

