"""`extauth explain`: a request described on the command line, decided by the configured policy, with the why,
and the rate limits that would apply (without counting anything)."""

import argparse
import asyncio
from datetime import UTC, datetime

from extauth.bundle.compiled import compile_policy
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
    lines = [f"policy {path} (version {policy.version})"]
    screened = policy.screener.screen(request)
    if screened is not None:
        lines.append(f"screening: blocked by {screened.rule}: {screened.reason} ({screened.status})")
        return lines, False
    try:
        who = _principal(config, args, headers)
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
        claims = dict(parse_claim(text) for text in args.claim)
        roles = claims.get("roles", [])
        return principal(args.sub, [roles] if isinstance(roles, str) else list(roles), claims)
    if not args.token:
        return None
    return asyncio.run(_verify(config, headers))


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
