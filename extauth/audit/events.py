"""Build the decision event. It never contains a token, cookie, key or query string."""

from typing import Any

from extauth.decision import Decision
from extauth.request import Request


def decision_event(request: Request, decision: Decision, latency_us: int, instance: str) -> dict[str, Any]:
    principal = decision.principal
    return {
        "event": "decision",
        "request_id": request.request_id,
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason.value,
        "route": decision.route,
        "rule": decision.rule,
        "policy_version": decision.policy_version,
        "subject": principal.subject if principal else None,
        "issuer": principal.issuer if principal else None,
        "key_id": principal.key_id if principal else None,
        "method": request.method,
        "host": request.host,
        "path": request.path,
        "source_address": request.source_address,
        "peer_principal": request.peer_principal or None,
        "latency_us": latency_us,
        "instance": instance,
    }
