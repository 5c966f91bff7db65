"""Who is on the other end of a gRPC call, and whether they may call Check or send access logs.

Check reveals the policy's answer to whoever asks and the Access Log Service writes `completion` events into the
audit trail, so both trust their caller (docs/architecture.md, "Trusting the caller"):

- Check: any connection the listeners accept, except that on TLS with `server.tls.allowed_clients` set, the client
  certificate must prove one of those identities. Plaintext listeners are only reachable from this host, or from
  anywhere with `server.insecure: true` written in the config (see ServerConfig).
- Access logs: unix-socket connections (guarded by file permissions), or TLS connections whose certificate proves
  an identity in `server.tls.access_log_clients`. Plaintext TCP never, loopback included: any local process can
  open a loopback connection, and a forged completion event would sit in the audit trail as Envoy's word.

A refused call ends with PERMISSION_DENIED and is counted (`extauth_callers_refused_total`).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import grpc

from extauth.config.schema import ServerTlsConfig, canonical_client_identity

Transport = Literal["unix", "tcp", "tls"]
Service = Literal["check", "access_log"]

#: gRPC auth-context properties of a verified peer certificate, by the identity kind they prove. Each kind is
#: read from its own typed property, so a DNS name can never pass for a URI or a common name.
_IDENTITY_PROPERTIES = (("peer_uri", "uri"), ("peer_dns", "dns"), ("x509_common_name", "cn"))


@dataclass(frozen=True, slots=True)
class Caller:
    transport: Transport
    #: Canonical `kind:value` identities (see canonical_client_identity); empty unless TLS with a certificate.
    identities: frozenset[str] = frozenset()


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    properties = context.auth_context()
    if properties.get("transport_security_type") == [b"ssl"]:
        return Caller("tls", frozenset(_identities(properties)))
    return Caller("unix" if context.peer().startswith("unix:") else "tcp")


def _identities(properties: dict[str, list[bytes]]) -> Iterable[str]:
    for name, kind in _IDENTITY_PROPERTIES:
        for raw in properties.get(name, ()):
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue  # cannot equal an allowlisted identity, which is text
            yield canonical_client_identity(kind, value)


@dataclass
class CallerStats:
    refused: Counter[tuple[Service, Transport]] = field(default_factory=Counter)


class CallerGate:
    def __init__(self, tls: ServerTlsConfig | None) -> None:
        self._check_clients = frozenset(tls.allowed_clients) if tls and tls.allowed_clients else None
        self._access_log_clients = frozenset(tls.access_log_clients) if tls else frozenset()
        self.stats = CallerStats()

    @property
    def checks_every_call(self) -> bool:
        """False when every connection the listeners accept may call Check, so the hot path skips the gate."""
        return self._check_clients is not None

    @property
    def accepts_access_logs_over_tls(self) -> bool:
        return bool(self._access_log_clients)

    def admits_check(self, context: grpc.aio.ServicerContext) -> bool:
        if self._check_clients is None:
            return True
        caller = caller_of(context)
        return caller.transport != "tls" or self._admitted("check", caller, self._check_clients)

    def admits_access_logs(self, context: grpc.aio.ServicerContext) -> bool:
        caller = caller_of(context)
        return caller.transport == "unix" or self._admitted("access_log", caller, self._access_log_clients)

    def _admitted(self, service: Service, caller: Caller, allowed: frozenset[str]) -> bool:
        if caller.identities & allowed:
            return True
        self.stats.refused[service, caller.transport] += 1
        return False
