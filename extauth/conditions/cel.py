"""`expression:` conditions: CEL, compiled once per rule, with the variables only the expression names."""

from collections.abc import Callable
from typing import Any

import cel

from extauth.conditions.params import Params
from extauth.conditions.predicate import Predicate
from extauth.identity.principal import Principal
from extauth.metrics import POLICY
from extauth.request import Request

_CEL_VARIABLES: dict[str, Callable[[Request, Principal, Params], Any]] = {
    "request": lambda request, principal, params: {
        "method": request.method, "host": request.hostname, "path": request.path, "headers": dict(request.headers),
        "query": dict(request.query_params), "source_ip": request.source_address, "peer": request.peer_principal,
        "context": dict(request.context_extensions)},
    "principal": lambda request, principal, params: {"subject": principal.subject, "issuer": principal.issuer,
                                                     "identity": principal.identity},
    "claims": lambda request, principal, params: dict(principal.claims),
    "roles": lambda request, principal, params: sorted(principal.roles),
    "params": lambda request, principal, params: dict(params),
}


def expression_check(source: str, deny: bool, rule: str) -> Predicate:
    """CEL, compiled once. An evaluation error (such as a missing field) or a non-boolean result is counted in
    `extauth_policy_expression_errors_total{rule}`; it makes a deny rule's condition hold (fail closed) and an
    allow rule's not hold. Only the variables the expression names are built per evaluation (copying every
    header costs more than evaluating most expressions)."""
    program = cel.compile(source)
    builders = [(name, _CEL_VARIABLES[name]) for name in program.variables() if name in _CEL_VARIABLES]

    def evaluate(request: Request, principal: Principal, params: Params) -> Any:
        return program.execute({name: build(request, principal, params) for name, build in builders})

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
