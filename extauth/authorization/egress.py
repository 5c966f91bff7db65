"""The egress allowlist: which workloads may call which external hosts through the egress gateway.

A call is egress when the egress listener's Envoy route says so (`Request.is_egress`), never because of anything the
client sends, and it is decided here alone: no ingress route can admit it, and an egress entry never admits an
ingress request. The caller is the verified peer (`identity/peer.py`); the destination is the canonical host
(`Request.hostname`: case, trailing dot and port removed; anything that is not a DNS name or an IP literal was
refused by screening). The first entry in file order that lists the host and the caller decides, and its limits
apply. No entry lists the host → 403 `no_matching_route`; entries list it but not the caller (or there is no
verified caller) → 403 `forbidden`.
"""

import ipaddress
from dataclasses import dataclass

from extauth.authorization.matching import host_matches
from extauth.decision import Decision
from extauth.documents.loader import PolicySet
from extauth.identity.peer import PeerIdentity, parse_peer, verified_peer
from extauth.reasons import Reason
from extauth.request import Request


@dataclass(frozen=True, slots=True)
class _Destination:
    destination_id: str
    hosts: tuple[str, ...]
    callers: frozenset[str]
    caller_prefixes: tuple[PeerIdentity, ...]

    def admits(self, caller: PeerIdentity) -> bool:
        return caller.spiffe_id in self.callers or any(caller.under(prefix) for prefix in self.caller_prefixes)


def _compile(destination_id: str, hosts: list[str], callers: list[str]) -> _Destination:
    prefixes = tuple(parse_peer(caller.removesuffix("/*")) for caller in callers if caller.endswith("/*"))
    return _Destination(destination_id, tuple(hosts), frozenset(c for c in callers if not c.endswith("/*")),
                        prefixes)  # type: ignore[arg-type]  # the schema accepted only parsable IDs


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class EgressEngine:
    def __init__(self, policy_set: PolicySet) -> None:
        self.version = policy_set.version
        self._destinations = tuple(_compile(destination_id, destination.hosts, destination.callers)
                                   for destination_id, destination in policy_set.egress())

    def authorize(self, request: Request) -> Decision:
        version, host = self.version, request.hostname
        listed = () if not host or _is_ip_literal(host) else tuple(
            destination for destination in self._destinations if host_matches(destination.hosts, host))
        if not listed:
            return Decision.deny(Reason.NO_MATCHING_ROUTE, "this destination is not allowed", policy_version=version)
        caller = verified_peer(request.peer_principal)
        if caller is not None:
            for destination in listed:
                if destination.admits(caller):
                    return Decision(True, Reason.OK, route=destination.destination_id,
                                    rule=destination.destination_id, policy_version=version)
        return Decision.deny(Reason.FORBIDDEN, "this workload may not call this destination",
                             route=listed[0].destination_id, policy_version=version)
