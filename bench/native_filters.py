"""Variant n: Envoy's own filters doing extauth's job for the bench's request, the in-proxy alternative.

extauth's job on `GET /api/orders` with a reader token (variants d/g): verify the JWT against the dev JWKS
(issuer, audience, RS256), allow the `reader` role on `/api/`, count two per-subject windows
(bench/policies/limited.yaml) and forward the subject and issuer as headers. The native chain is
`jwt_authn` (payload into dynamic metadata, `sub`/`iss` into headers) → `rbac` (on that metadata) →
`local_ratelimit` (two token buckets keyed by the subject header) → router. The gRPC access log goes too:
without extauth there is no Access Log Service to stream to.
"""

from collections.abc import Sequence
from pathlib import Path

from extauth.devstack.envoy import Node, connection_managers
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
GRPC_ACCESS_LOGGER = "envoy.access_loggers.http_grpc"
JWT_FILTER = "envoy.filters.http.jwt_authn"
PROVIDER = "dev"
PAYLOAD_KEY = "jwt_payload"
SUBJECT_HEADER = "x-extauth-subject"
ISSUER_HEADER = "x-extauth-issuer"
PROTECTED_PREFIX = "/api/"
READER_ROLE = "reader"
#: limited.yaml's per-subject windows as token buckets: (requests, seconds).
WINDOWS = ((10_000_000, 3600), (1_000_000, 1))
UNLIMITED = 1_000_000_000


def use_native_filters(bootstrap: Node, jwks: Path, windows: Sequence[tuple[int, int]] = WINDOWS) -> None:
    """Replace ext_authz with jwt_authn + rbac + local_ratelimit in every connection manager, in place;
    `windows` are (requests, seconds) per subject (tests use small ones to see them enforced)."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for manager in connection_managers(listener):
            position = next(index for index, http_filter in enumerate(manager["http_filters"])
                            if http_filter["name"] == EXT_AUTHZ_FILTER)
            manager["http_filters"][position:position + 1] = [jwt_authn(jwks), rbac(), local_ratelimit(windows)]
            manager["access_log"] = [logger for logger in manager.get("access_log", [])
                                     if logger["name"] != GRPC_ACCESS_LOGGER]
            for virtual_host in manager["route_config"]["virtual_hosts"]:
                for route in virtual_host["routes"]:
                    route.pop("typed_per_filter_config", None)  # ext_authz's context_extensions


def jwt_authn(jwks: Path) -> Node:
    """Tokens are required on `/api/` only, as the demo policy requires them on its `api` route."""
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                PROVIDER: {
                    "issuer": DEV_ISSUER,
                    "audiences": [DEV_AUDIENCE],
                    "local_jwks": {"filename": str(jwks)},
                    "payload_in_metadata": PAYLOAD_KEY,
                    "claim_to_headers": [{"header_name": SUBJECT_HEADER, "claim_name": "sub"},
                                         {"header_name": ISSUER_HEADER, "claim_name": "iss"}],
                },
            },
            "rules": [{"match": {"prefix": PROTECTED_PREFIX}, "requires": {"provider_name": PROVIDER}}],
        },
    }


def rbac() -> Node:
    """Allow `/api/` to tokens whose `roles` list holds `reader`; every other path stays open, as for d."""
    reader = {"metadata": {"filter": JWT_FILTER, "path": [{"key": PAYLOAD_KEY}, {"key": "roles"}],
                           "value": {"list_match": {"one_of": {"string_match": {"exact": READER_ROLE}}}}}}
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "readers-on-api": {"permissions": [{"url_path": {"path": {"prefix": PROTECTED_PREFIX}}}],
                                       "principals": [reader]},
                    "not-api": {"permissions": [{"not_rule": {"url_path": {"path": {"prefix": PROTECTED_PREFIX}}}}],
                                "principals": [{"any": True}]},
                },
            },
        },
    }


def local_ratelimit(windows: Sequence[tuple[int, int]]) -> Node:
    """One descriptor per window keyed by the subject header jwt_authn set; an empty descriptor value is a
    wildcard, so each subject gets its own buckets as limited.yaml's `key: [subject]` does."""
    descriptors = []
    rate_limits = []
    for requests, seconds in windows:
        window = f"{requests}-per-{seconds}s"
        descriptors.append({
            "entries": [{"key": "window", "value": window}, {"key": "subject"}],
            "token_bucket": {"max_tokens": requests, "tokens_per_fill": requests, "fill_interval": f"{seconds}s"},
        })
        rate_limits.append({"actions": [
            {"generic_key": {"descriptor_key": "window", "descriptor_value": window}},
            {"request_headers": {"header_name": SUBJECT_HEADER, "descriptor_key": "subject"}},
        ]})
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "native_limits",
            # The filter-wide bucket must exist; it never runs dry, so only the per-subject descriptors decide.
            "token_bucket": {"max_tokens": UNLIMITED, "tokens_per_fill": UNLIMITED, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "descriptors": descriptors,
            "rate_limits": rate_limits,
            "max_dynamic_descriptors": 10_000,
        },
    }
