"""`--policy DIR`: is a route that skips ext_authz public in the policy? Asked of the policy engine itself, with
anonymous synthetic requests for the paths the Envoy route matches, so the answer is the one extauth would give.

A prefix matches unboundedly many paths, so several are probed (the prefix itself, one and two segments below it,
a file-like name, and, for a prefix without a trailing slash, a longer name: `/public` also matches `/publicity`),
upper-cased too when the route ignores case, for each host of its virtual host, with every common method: a policy
that makes only `/public/hello` public does not cover a route for `/public/`. A regex or a path_match_policy
cannot be sampled faithfully and is reported as unverifiable. The requests carry no context_extensions: a route
that skips ext_authz sends none.
"""

from pathlib import Path
from typing import Any

import betterproto2

from extauth.authorization.engine import PolicyEngine
from extauth.documents.loader import load_policies
from extauth.request import Request
from extauth.tools.synthetic import check_request

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_BELOW = ("x", "x/y", "x.json")


class PolicyPublicCheck:
    def __init__(self, directory: Path) -> None:
        self._engine = PolicyEngine(load_policies(directory))

    def __call__(self, match: Any, domains: list[str]) -> str | None:
        kind, value = betterproto2.which_one_of(match, "path_specifier")
        if kind == "path":
            paths = [value]
        elif kind in ("prefix", "path_separated_prefix"):
            base = value if value.endswith("/") else value + "/"
            paths = [value or "/"] + [base + below for below in _BELOW]
            if kind == "prefix" and not value.endswith("/"):
                paths.append(value + "x")
        else:
            return f"a {kind or 'missing'} path match cannot be checked against the policy; match by path or prefix"
        if match.case_sensitive is False:
            paths += [path.upper() for path in paths]
        for host in _hosts(domains):
            for path in paths:
                for method in METHODS:
                    decision = self._engine.authorize(Request(check_request(path, method, host=host)), None)
                    if not decision.allowed:
                        return f"anonymous {method} {path} is denied ({decision.reason})"
        return None


def _hosts(domains: list[str]) -> list[str]:
    """A concrete host for each of the virtual host's domains (`*.example.com` as `x.example.com`)."""
    hosts = [domain.replace("*", "x", 1) if domain.startswith("*.") or domain.endswith("-*") else domain
             for domain in domains if domain != "*"]
    return hosts or ["gateway.example"]
