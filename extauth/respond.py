"""Respond phase: render a Decision as the CheckResponse Envoy acts on.

Allowed: identity headers for the upstream (exactly as authenticated, never altered), removal of client-sent
copies of every header extauth owns (the identity headers and every header a rule of the live policy can set,
whether or not a rule set it on this request) so none can be spoofed, optional removal of `Authorization`.
Denied: the HTTP status, a JSON body `{"error", "reason", "request_id"}` and, for 401, an RFC 6750
`WWW-Authenticate` challenge.
"""

import json
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse, DeniedHttpResponse, OkHttpResponse
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2, status_pb2

from extauth.config.schema import ForwardConfig
from extauth.decision import Decision
from extauth.documents.headers import header_value_problem
from extauth.identity.claims import claim_text, find_claim
from extauth.identity.principal import Principal
from extauth.reasons import Reason

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
#: Principals whose identity headers the responder keeps (the token cache's hits); emptied when full.
IDENTITY_CACHE_SIZE = 4096
_CONTROL_CHARACTERS = {code: None for code in (*range(0x00, 0x20), 0x7F)}
_ERROR_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 405: "method_not_allowed", 414: "uri_too_long",
    429: "too_many_requests", 431: "request_header_fields_too_large", 500: "internal_error", 503: "unavailable",
}


def sanitize_header_value(value: str, max_bytes: int) -> str:
    """Drop control characters (CR/LF/NUL would split or truncate headers) and cap the UTF-8 length."""
    cleaned = value.translate(_CONTROL_CHARACTERS).strip()
    encoded = cleaned.encode()
    if len(encoded) <= max_bytes:
        return cleaned
    return encoded[:max_bytes].decode(errors="ignore")


def _header(name: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=_OVERWRITE)


class Responder:
    def __init__(self, forward: ForwardConfig, credential_headers: tuple[str, ...] = ()) -> None:
        """`credential_headers`: headers carrying credentials other than `Authorization` (`api_keys.header`),
        removed on every allow so the upstream never sees them."""
        self._forward = forward
        self._claim_headers = tuple(forward.claim_headers.items())
        removed = [*forward.header_names, *forward.remove_request_headers, *credential_headers]
        if forward.strip_authorization:
            removed.append("authorization")
        #: Client-sent copies of identity headers are always removed, so an anonymous (public-route)
        #: request cannot smuggle `x-extauth-subject: admin` to the upstream.
        self._headers_to_remove = tuple(removed)
        #: The last policy's owned headers and the full removal list built from them (a policy changes rarely).
        self._owned: tuple[tuple[str, ...], tuple[str, ...]] = ((), self._headers_to_remove)
        self._status_by_code = {status: HttpStatus(code=status) for status in _ERROR_BY_STATUS}
        #: Identity headers by principal (keyed by id, checked by identity): the token cache hands back the same
        #: Principal for every request with its token, so they are worked out once per token, not per request.
        self._identity_by_principal: dict[int, tuple[Principal, tuple[HeaderValueOption, ...], frozenset[str]]] = {}

    def render(self, decision: Decision, request_id: str, owned_headers: tuple[str, ...] = (), *,
               egress: bool = False) -> CheckResponse:
        """`owned_headers`: every header the live policy's rules can set (`PolicyEngine.owned_headers`).
        `egress`: a call leaving through the egress gateway goes out as the workload sent it (its `Authorization`
        is for the external API, and extauth vouches for nothing there), with only the rate-limit fields added."""
        if decision.allowed:
            ok = OkHttpResponse() if egress else self._upstream_changes(decision, owned_headers)
            for name, value in decision.client_headers:
                ok.response_headers_to_add.append(_header(name, value))
            return CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
        return self._deny(decision, request_id)

    def _removal(self, owned_headers: tuple[str, ...]) -> tuple[str, ...]:
        cached_for, removal = self._owned
        if owned_headers is not cached_for:
            removal = tuple(dict.fromkeys((*self._headers_to_remove, *owned_headers)))
            self._owned = (owned_headers, removal)
        return removal

    def _upstream_changes(self, decision: Decision, owned_headers: tuple[str, ...]) -> OkHttpResponse:
        identity, identity_names = self._identity(decision.principal)
        # A rule header whose value is not header-safe is left out (and so removed), never altered.
        limit = self._forward.max_header_value_bytes
        rule_headers = [(name, value) for name, value in decision.upstream_headers
                        if header_value_problem(value, limit) is None]
        # Envoy applies headers_to_remove after the headers it sets, so a name we set is not also removed;
        # setting it already overwrites any client-sent copy.
        removed = self._removal(owned_headers)
        if identity or rule_headers:
            names = identity_names.union(name for name, _ in rule_headers)
            removed = tuple(name for name in removed if name not in names)
        ok = OkHttpResponse(headers_to_remove=removed, headers=identity)
        headers = ok.headers
        for name, value in rule_headers:
            headers.append(_header(name, value))
        return ok

    def _identity(self, principal: Principal | None) -> tuple[tuple[HeaderValueOption, ...], frozenset[str]]:
        """The identity headers of `principal`, built once per Principal object (at most IDENTITY_CACHE_SIZE)."""
        if principal is None:
            return (), frozenset()
        cached = self._identity_by_principal.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1], cached[2]
        pairs = self._identity_headers(principal)
        headers = tuple(_header(name, value) for name, value in pairs)
        names = frozenset(name for name, _ in pairs)
        if len(self._identity_by_principal) >= IDENTITY_CACHE_SIZE:
            self._identity_by_principal.clear()
        self._identity_by_principal[id(principal)] = (principal, headers, names)
        return headers, names

    def _identity_headers(self, principal: Principal | None) -> list[tuple[str, str]]:
        """Identity and issuer go out exactly as authentication accepted them (it refuses any that would need
        sanitising). A claim value that is not header-safe is left out like a missing claim, never altered, so
        two distinct values can never arrive upstream as one."""
        if principal is None:
            return []
        forward = self._forward
        headers = []
        if forward.subject_header:
            headers.append((forward.subject_header, principal.identity))
        if forward.issuer_header:
            headers.append((forward.issuer_header, principal.issuer))
        values: list[tuple[str, Any]] = [(name, find_claim(principal.claims, claim))
                                         for name, claim in self._claim_headers]
        if forward.roles_header and principal.roles:
            values.append((forward.roles_header, sorted(principal.roles)))
        if forward.groups_header and principal.groups:
            values.append((forward.groups_header, sorted(principal.groups)))
        for name, value in values:
            text = claim_text(value)
            if text is not None and header_value_problem(text, forward.max_header_value_bytes) is None:
                headers.append((name, text))
        return headers

    def _deny(self, decision: Decision, request_id: str) -> CheckResponse:
        status = decision.status
        body = json.dumps(
            {"error": _ERROR_BY_STATUS[status], "reason": decision.reason.value,
             "request_id": request_id},
            separators=(",", ":"),
        )
        denied = DeniedHttpResponse(status=self._status_by_code[status], body=body)
        denied.headers.append(_header("content-type", "application/json"))
        for name, value in decision.client_headers:
            denied.headers.append(_header(name, value))
        if decision.is_authentication_failure:
            denied.headers.append(_header("www-authenticate", _bearer_challenge(decision)))
        grpc_code = code_pb2.UNAUTHENTICATED if status == 401 else code_pb2.PERMISSION_DENIED
        return CheckResponse(status=status_pb2.Status(code=grpc_code), denied_response=denied)


def _bearer_challenge(decision: Decision) -> str:
    """RFC 6750 §3: no error code when no credentials were sent; `invalid_token` when they were bad."""
    if decision.reason is Reason.MISSING_TOKEN:
        return 'Bearer realm="extauth"'
    quoted = sanitize_header_value(decision.description, 256).replace("\\", "\\\\").replace('"', "'")
    return f'Bearer realm="extauth", error="invalid_token", error_description="{quoted}"'
