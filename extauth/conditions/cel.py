"""`expression:` conditions: CEL, compiled once per rule, with the variables only the expression names."""

from collections.abc import Callable
from typing import Any

import cel

from extauth.clock import Clock
from extauth.conditions.params import Params
from extauth.conditions.predicate import Predicate
from extauth.identity.peer import peer_of, valid_certificate
from extauth.identity.principal import Principal
from extauth.metrics import POLICY
from extauth.request import Request

Variable = Callable[[Request, Principal, Params, Clock], Any]


def _peer_id(request: Request, clock: Clock) -> str:
    peer = peer_of(request, clock.now())
    return peer.spiffe_id if peer is not None else ""


def _peer_variable(request: Request, clock: Clock) -> dict[str, Any]:
    """The verified peer (docs/client-certificates.md): its SPIFFE ID and the parts of it, and what the forwarded
    certificate says when it is valid now. Every key is always present (empty when unknown), so `peer.id == "..."`
    is false without a certificate rather than an evaluation error."""
    now = clock.now()
    peer = peer_of(request, now)
    certificate = valid_certificate(request.peer_certificate, now)
    return {
        "id": peer.spiffe_id if peer else "", "trust_domain": peer.trust_domain if peer else "",
        "namespace": (peer.namespace or "") if peer else "",
        "service_account": (peer.service_account or "") if peer else "",
        "subject": certificate.subject if certificate else "",
        "uri_sans": list(certificate.uri_sans) if certificate else [],
        "dns_sans": list(certificate.dns_sans) if certificate else [],
        "not_before": int(certificate.not_before) if certificate else 0,
        "not_after": int(certificate.not_after) if certificate else 0,
    }


_CEL_VARIABLES: dict[str, Variable] = {
    "request": lambda request, principal, params, clock: {
        "method": request.method, "host": request.hostname, "path": request.path, "headers": dict(request.headers),
        "query": dict(request.query_params), "source_ip": request.source_address,
        "peer": _peer_id(request, clock), "context": dict(request.context_extensions)},
    "peer": lambda request, principal, params, clock: _peer_variable(request, clock),
    "principal": lambda request, principal, params, clock: {
        "subject": principal.subject, "issuer": principal.issuer, "identity": principal.identity},
    "claims": lambda request, principal, params, clock: dict(principal.claims),
    "roles": lambda request, principal, params, clock: sorted(principal.roles),
    "params": lambda request, principal, params, clock: dict(params),
}


def expression_check(source: str, deny: bool, rule: str, clock: Clock) -> Predicate:
    """CEL, compiled once. An evaluation error (such as a missing field) or a non-boolean result is counted in
    `extauth_policy_expression_errors_total{rule}`; it makes a deny rule's condition hold (fail closed) and an
    allow rule's not hold. Only the variables the expression names are built per evaluation (copying every
    header costs more than evaluating most expressions)."""
    program = cel.compile(source)
    builders = [(name, _CEL_VARIABLES[name]) for name in program.variables() if name in _CEL_VARIABLES]

    def evaluate(request: Request, principal: Principal, params: Params) -> Any:
        return program.execute({name: build(request, principal, params, clock) for name, build in builders})

    def test(request: Request, principal: Principal, params: Params) -> bool:
        try:
            result = evaluate(request, principal, params)
        except Exception:
            result = None
        if result is True or result is False:
            return result
        POLICY.expression_error(rule)
        return deny

    def why(request: Request, principal: Principal, params: Params) -> str:
        try:
            result = evaluate(request, principal, params)
        except Exception as error:
            return f"{source!r} failed: {type(error).__name__}: {error}"
        return f"{source!r} is {result!r}"

    return Predicate("expression", test, why)
