"""Request ids for clients through real Envoy: every response carries the `x-request-id` of its audit events, and
an id a client sends is replaced at the edge (envoy/envoy.yaml, docs/audit.md#request-ids)."""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.polling import wait_for

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token

#: (path, with reader token, expected status): allows, and denies from authentication and authorization.
REQUESTS = [("/public/hello", False, 200), ("/api/orders", True, 200), ("/api/orders", False, 401),
            ("/admin/users", True, 403), ("/elsewhere", True, 403), ("/api/orders", "forged", 401)]


def events_by_request_id(extauth: ExtauthProcess, request_ids: set[str]) -> dict[str, set[str]]:
    """The audit event kinds (decision, completion) of each request id, once both are there for every id."""

    def both() -> dict[str, set[str]]:
        kinds: dict[str, set[str]] = {request_id: set() for request_id in request_ids}
        for event in extauth.audit_events(kind=None):
            if event.get("request_id") in kinds:
                kinds[event["request_id"]].add(event["event"])
        return kinds if all(found == {"decision", "completion"} for found in kinds.values()) else {}

    return wait_for(both)


def test_every_response_carries_the_request_id_of_its_audit_events(
        gateway: EnvoyProcess, extauth: ExtauthProcess, certs: DevCerts) -> None:
    """Each 200 and each deny has an `x-request-id` header; the audit file has that id's decision and completion,
    and it is the id the upstream saw (allows) or the deny body names (denies)."""
    reader = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    request_ids = set()
    for path, token, expected in REQUESTS:
        response = gateway.get(path, reader if token is True else token or None)
        assert response.status == expected
        request_id = response.headers["x-request-id"]
        body = response.json()
        assert request_id == (body["headers"]["x-request-id"] if expected == 200 else body["request_id"])
        request_ids.add(request_id)
    assert len(request_ids) == len(REQUESTS)
    events_by_request_id(extauth, request_ids)


CLIENT_IDS = st.one_of(st.uuids().map(str), st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True))
SPELLINGS = st.sampled_from(["x-request-id", "X-Request-Id", "X-REQUEST-ID"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client_id=CLIENT_IDS, spelling=SPELLINGS, path=st.sampled_from(["/public/hello", "/api/orders"]))
def test_a_client_sent_request_id_is_replaced_at_the_edge(
        gateway: EnvoyProcess, extauth: ExtauthProcess, client_id: str, spelling: str, path: str) -> None:
    """However spelled, an `x-request-id` from the client is neither echoed nor audited: Envoy issues its own."""
    response = gateway.request("GET", path, {spelling: client_id})
    issued = response.headers["x-request-id"]
    assert issued != client_id
    uuid.UUID(issued)  # Envoy's own ids are UUIDs
    events_by_request_id(extauth, {issued})
    assert not any(event.get("request_id") == client_id for event in extauth.audit_events(kind=None))


def test_a_client_cannot_reuse_another_requests_id(gateway: EnvoyProcess, extauth: ExtauthProcess) -> None:
    """Sending the id of an earlier request gets a fresh one: that id keeps naming one decision in the audit."""
    earlier = gateway.get("/public/hello").headers["x-request-id"]
    replayed = gateway.request("GET", "/public/hello", {"x-request-id": earlier})
    assert replayed.headers["x-request-id"] != earlier
    events_by_request_id(extauth, {earlier, replayed.headers["x-request-id"]})
    decisions = [event for event in extauth.audit_events() if event["request_id"] == earlier]
    assert len(decisions) == 1
