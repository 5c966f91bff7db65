"""The audit events, schema v1 (docs/audit.md): one `decision` per Check, one `completion` per request Envoy
logged. Built as plain dicts on the Check path; the writer stamps, redacts, chains and renders them.

They never contain a token, cookie, API key or (by default) query string: the principal is described by
verified fields only, headers come through `Redactor.headers`, and the writer scrubs the rest.
"""

import time
from typing import Any

from envoy.config.core.v3.base_pb2 import RequestMethod
from envoy.data.accesslog.v3.accesslog_pb2 import HTTPAccessLogEntry

from extauth.audit.redact import Redactor
from extauth.decision import Decision
from extauth.request import Request

SCHEMA_VERSION = 1
DEFAULT_REDACTOR = Redactor()

#: Envoy's short response-flag codes (as `%RESPONSE_FLAGS%` prints them) by ALS `ResponseFlags` field.
RESPONSE_FLAG_CODES = {
    "failed_local_healthcheck": "LH", "no_healthy_upstream": "UH", "upstream_request_timeout": "UT",
    "local_reset": "LR", "upstream_remote_reset": "UR", "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC", "upstream_overflow": "UO", "no_route_found": "NR",
    "delay_injected": "DI", "fault_injected": "FI", "rate_limited": "RL", "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE", "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX", "stream_idle_timeout": "SI", "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE", "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF", "no_filter_config_found": "NFCF", "duration_timeout": "DT",
    "upstream_protocol_error": "UPE", "no_cluster_found": "NC", "overload_manager": "OM",
    "dns_resolution_failure": "DF", "downstream_remote_reset": "DR",
}


def decision_event(request: Request, decision: Decision, latency_us: int, instance: str,
                   timings_us: dict[str, int] | None = None, redactor: Redactor = DEFAULT_REDACTOR) -> dict[str, Any]:
    principal = decision.principal
    headers = request.headers
    context = request.context_extensions
    event = {
        "schema_version": SCHEMA_VERSION,
        "event": "decision",
        "ts": time.time(),
        "request_id": request.request_id,
        "traceparent": headers.get("traceparent"),
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason.value,
        "route": decision.route,
        "rule": decision.rule,
        "policy_version": decision.policy_version,
        "subject": None,
        "issuer": None,
        "key_id": None,
        "client_id": None,
        "roles": None,
        "source_address": request.source_address,
        "peer_principal": request.peer_principal or None,
        "method": request.wire_method,
        "host": request.host,
        "path": request.wire_path,
        "service": context.get("service"),
        "envoy_route": context.get("route"),
        "headers": redactor.headers(headers),
        "rate_limit": decision.rate_limit,
        "latency_us": latency_us,
        "timings_us": timings_us,
        "instance": instance,
    }
    if principal is not None:
        claims = principal.claims
        client_id = claims.get("client_id") or claims.get("azp")
        event.update(subject=principal.subject, issuer=principal.issuer, key_id=principal.key_id,
                     client_id=client_id if isinstance(client_id, str) else None, roles=sorted(principal.roles))
    if request.is_egress:  # ingress events carry no `direction` (docs/audit.md)
        event.update(direction="egress", destination=request.hostname or None)
    if redactor.include_query and request.query:
        event["query"] = request.query
    if decision.waf is not None:  # WAF rules matched: which, and the score (docs/audit.md)
        event["waf"] = decision.waf
    if request.path != request.wire_path:  # what the policy decided on (docs/security.md), when it differs
        event["canonical_path"] = request.path
    return event


def completion_event(entry: HTTPAccessLogEntry, instance: str, redactor: Redactor = DEFAULT_REDACTOR) -> dict[str, Any]:
    """What happened to a request after the decision, from Envoy's gRPC access log, joined on `request_id`."""
    common = entry.common_properties
    request = entry.request
    response = entry.response
    path, query = redactor.split_path(request.path)
    upstream = common.upstream_remote_address.socket_address
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event": "completion",
        "ts": common.start_time.ToNanoseconds() / 1e9 if common.HasField("start_time") else time.time(),
        "request_id": request.request_id,
        "status": response.response_code.value if response.HasField("response_code") else 0,
        "response_flags": ",".join(RESPONSE_FLAG_CODES.get(field.name, field.name)
                                   for field, _ in common.response_flags.ListFields()) or None,
        "response_code_details": response.response_code_details or None,
        "method": _METHODS.get(request.request_method, "") or None,
        "host": request.authority or None,
        "path": path or None,
        "protocol": _PROTOCOLS.get(entry.protocol_version),
        "source_address": common.downstream_remote_address.socket_address.address or None,
        "upstream_host": f"{upstream.address}:{upstream.port_value}" if upstream.address else None,
        "upstream_cluster": common.upstream_cluster or None,
        "route_name": common.route_name or None,
        "bytes_received": request.request_body_bytes,
        "bytes_sent": response.response_body_bytes,
        "duration_us": _microseconds(common, "time_to_last_downstream_tx_byte"),
        "upstream_duration_us": _upstream_duration_us(common),
        "instance": instance,
    }
    if query:
        event["query"] = query
    return event


def _microseconds(common: Any, field: str) -> int | None:
    return getattr(common, field).ToMicroseconds() if common.HasField(field) else None


def _upstream_duration_us(common: Any) -> int | None:
    """First byte sent upstream → last byte received from it (Envoy's `%RESPONSE_DURATION%`-like span)."""
    first, last = (_microseconds(common, name) for name in ("time_to_first_upstream_tx_byte",
                                                             "time_to_last_upstream_rx_byte"))
    return last - first if first is not None and last is not None else None


_METHODS = {value.number: value.name for value in RequestMethod.DESCRIPTOR.values
            if value.name != "METHOD_UNSPECIFIED"}
_PROTOCOLS = {1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}
