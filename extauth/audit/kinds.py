"""Every `event` kind the service writes into the audit stream, by group, with what it records.

The one list `extauth audit --event` offers and docs/audit.md documents; tests/unit/cli/test_audit_event_kinds.py
finds every event name the code can emit and holds this list and the docs to it. Kept apart from the event
builders so the CLI can read it without importing Envoy's protobuf modules.
"""

DECISION_EVENTS = {
    "decision": "one per Check: allow or deny, why, and who",
    "completion": "one per request Envoy logged: what the client finally got",
}
STREAM_EVENTS = {
    "audit_started": "first line of each chain (one per writer start)",
    "audit_checkpoint": "a signed checkpoint of the chain so far (with audit.signing_key)",
    "audit_dropped": "events lost since the last such record, by kind",
    "audit_closed": "last line after a graceful stop (the seal)",
}
OPERATIONAL_EVENTS = {
    "policy_reloaded": "a policy reload was swapped in",
    "policy_reload_failed": "a policy reload was rejected; the previous version keeps serving",
    "jwks_unavailable": "a provider's key fetch started failing",
    "jwks_recovered": "a provider's keys loaded again",
    "introspection_unavailable": "the introspection endpoint's breaker opened: opaque tokens get 503",
    "introspection_recovered": "the introspection endpoint answers again",
    "apikeys_reloaded": "the API key store was read again and swapped in",
    "apikeys_reload_failed": "the API key store did not load; the previous keys keep serving",
    "ratelimit_backend_degraded": "the limit store's breaker opened: failure modes answer",
    "ratelimit_backend_recovered": "the limit store answers again",
    "insecure_listener": "at start: an address other hosts can reach admits unauthenticated callers",
}
EVENT_KINDS = {**DECISION_EVENTS, **STREAM_EVENTS, **OPERATIONAL_EVENTS}
