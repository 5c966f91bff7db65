"""`extauth explain`: a request described on the command line, decided by the configured policy, with the why,
and the rate limits that would apply (without counting anything)."""

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.clock import ManualClock, SystemClock
from extauth.config.schema import Config
from extauth.devtools.tokens import parse_claim
from extauth.identity.authenticator import Authenticator
from extauth.identity.principal import AuthenticationError, Principal
from extauth.request import Request
from extauth.tools.synthetic import check_request_for_url, principal


class UsageError(Exception):
    """The command line asks for something the configuration cannot give (exit 2, like a usage error)."""


def explain_request(config: Config, args: argparse.Namespace) -> tuple[list[str], bool]:
    """The trace lines and whether the request would be allowed."""
    headers = dict(args.header)
    if args.token:
        headers["authorization"] = f"Bearer {args.token}"
    clock = ManualClock((args.at or datetime.now(UTC)).timestamp())
    path = config.policy.shadow_path if args.shadow else config.policy.path
    if path is None:
        raise UsageError("--shadow: the config has no policy.shadow_path")
    policy = compile_policy(path, clock)
    request = Request(check_request_for_url(
        args.url, args.method.upper(), headers=headers, source=args.source, peer=args.peer,
        context_extensions=dict(args.context)))
    return explain_with(policy, path, request, lambda: _principal(config, args, headers))


def explain_with(policy: CompiledPolicy, source: Path, request: Request,
                 identify: Callable[[], Principal | None]) -> tuple[list[str], bool]:
    """The trace of one request through `policy` (from disk, or the one a running process has loaded);
    `identify` is asked for the principal only once screening let the request through, as in a Check."""
    lines = [f"policy {source} (version {policy.version})"]
    screened = policy.screener.screen(request)
    if screened is not None:
        lines.append(f"screening: blocked by {screened.rule}: {screened.reason} ({screened.status})")
        return lines, False
    try:
        who = identify()
    except AuthenticationError as error:
        lines.append(f"authentication: {error.reason} ({error.description}) -> 401")
        return lines, False
    lines.append(f"principal: {_describe(who)}")
    explanation = policy.engine.explain(request, who)
    lines.extend(explanation.lines())
    if explanation.decision.allowed:
        applied = policy.limits.applicable(request, explanation.decision)
        lines.extend([f"limit {limit.describe()}" for limit in applied] or ["limits: none apply"])
    return lines, explanation.decision.allowed


def _principal(config: Config, args: argparse.Namespace, headers: dict[str, str]) -> Principal | None:
    if args.sub:
        return described_principal(args.sub, dict(parse_claim(text) for text in args.claim))
    if not args.token:
        return None
    return asyncio.run(_verify(config, headers))


def described_principal(subject: str, claims: dict[str, Any]) -> Principal:
    """A principal described by its claims (never a token); `roles` may be one role or a list of them."""
    roles = claims.get("roles", [])
    listed = [roles] if isinstance(roles, str) else roles if isinstance(roles, list) else []
    return principal(subject, [role for role in listed if isinstance(role, str)], claims)


async def _verify(config: Config, headers: dict[str, str]) -> Principal | None:
    authenticator = Authenticator(config.authentication, SystemClock())
    await authenticator.start()
    try:
        return await authenticator.authenticate(headers)
    finally:
        await authenticator.stop()


def _describe(who: Principal | None) -> str:
    if who is None:
        return "anonymous"
    return f"sub={who.subject} roles={sorted(who.roles)} issuer={who.issuer}"
