"""The compiled policy: screener, engine and limit plan from one load of the policy files, one immutable value."""

from dataclasses import dataclass
from pathlib import Path

from extauth.authorization.egress import EgressEngine
from extauth.authorization.engine import PolicyEngine
from extauth.clock import Clock
from extauth.documents.errors import ConfigError, sorted_issues
from extauth.documents.loader import read_policies
from extauth.ratelimit.plan import RateLimitPlan
from extauth.screening.compiler import compile_screening
from extauth.screening.screener import Screener


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Everything a Check needs from the policy files, compiled once per load."""

    version: str
    engine: PolicyEngine
    screener: Screener
    limits: RateLimitPlan
    egress: EgressEngine


def compile_policy(path: Path, clock: Clock) -> CompiledPolicy:
    """Load and compile; raises ConfigError (file:line) for anything `extauth validate` would reject."""
    policy_set, issues = read_policies(path)
    try:  # screening is compiled even when the policy documents have errors: all of them are reported at once
        screener = compile_screening(policy_set.screening)
    except ConfigError as error:
        issues = sorted_issues(issues + error.issues)
    if issues:
        raise ConfigError(issues)
    granting = policy_set.granting_roles()  # once per load, shared by authorization and rate limiting
    return CompiledPolicy(policy_set.version, PolicyEngine(policy_set, clock, granting), screener,
                          RateLimitPlan(policy_set, clock, granting), EgressEngine(policy_set))
