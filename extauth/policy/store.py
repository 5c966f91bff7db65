"""The policy in force, and safe change: reload on SIGHUP or file change with an atomic swap.

A Check reads `store.current` once and uses that snapshot throughout, so a reload never mixes two
policies in one decision. A reload that fails validation changes nothing: the last good policy keeps
serving, health stays SERVING, and the failure is logged with every file:line error and counted.
"""

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from extauth.clock import Clock
from extauth.config.errors import ConfigError
from extauth.events import Notify, ignore
from extauth.policy.engine import PolicyEngine
from extauth.policy.loader import load_policies, policy_files
from extauth.ratelimit.plan import RateLimitPlan
from extauth.screening.screener import Screener, compile_screening

log = structlog.get_logger("extauth.policy")


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Everything a Check needs from the policy files, compiled once per load."""

    version: str
    engine: PolicyEngine
    screener: Screener
    limits: RateLimitPlan


def compile_policy(path: Path, clock: Clock) -> CompiledPolicy:
    """Load and compile; raises ConfigError (file:line) for anything `extauth validate` would reject."""
    policy_set = load_policies(path)
    return CompiledPolicy(policy_set.version, PolicyEngine(policy_set, clock), compile_screening(policy_set.screening),
                          RateLimitPlan(policy_set, clock))


@dataclass(slots=True)
class ReloadStats:
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    #: Per-source counters for the metrics endpoint; kept here so tests can read them without one.
    by_trigger: dict[str, int] = field(default_factory=dict)


class PolicyStore:
    def __init__(self, path: Path, clock: Clock, shadow_path: Path | None = None, notify: Notify = ignore) -> None:
        self.path = path
        self._notify = notify
        self.shadow_path = shadow_path
        self._clock = clock
        self.current = compile_policy(path, clock)
        self.shadow = compile_policy(shadow_path, clock) if shadow_path else None
        self.stats = ReloadStats()
        self._fingerprint = self._files_fingerprint()

    def reload(self, trigger: str) -> bool:
        """Recompile both live and shadow policies; swap only if both compile. Returns True on success."""
        self.stats.by_trigger[trigger] = self.stats.by_trigger.get(trigger, 0) + 1
        self._fingerprint = self._files_fingerprint()
        try:
            live = compile_policy(self.path, self._clock)
            shadow = compile_policy(self.shadow_path, self._clock) if self.shadow_path else None
        except ConfigError as error:
            self.stats.failures += 1
            self.stats.last_error = str(error)
            errors = [str(issue) for issue in error.issues]
            log.error("policy_reload_failed", trigger=trigger, serving_version=self.current.version, errors=errors)
            self._notify("policy_reload_failed", trigger=trigger, serving_version=self.current.version, errors=errors)
            return False
        changed = live.version != self.current.version or (
            shadow is not None and self.shadow is not None and shadow.version != self.shadow.version)
        self.current, self.shadow = live, shadow
        self.stats.reloads += 1
        self.stats.last_error = None
        log.info("policy_reloaded", trigger=trigger, version=live.version, changed=changed,
                 shadow_version=shadow.version if shadow else None)
        self._notify("policy_reloaded", trigger=trigger, version=live.version, changed=changed,
                     shadow_version=shadow.version if shadow else None)
        return True

    def files_changed(self) -> bool:
        return self._files_fingerprint() != self._fingerprint

    async def watch(self, interval_seconds: float) -> None:
        """Poll for changes: cheap stats, no extra dependency, and it follows Kubernetes ConfigMap symlink swaps."""
        while True:
            await asyncio.sleep(interval_seconds)
            if self.files_changed():
                self.reload("file_change")

    def _files_fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        entries = []
        for root in (self.path, self.shadow_path):
            if root is None:
                continue
            try:
                files = policy_files(root)
            except OSError:
                continue
            for file in files:
                try:
                    stat = os.stat(file)
                except OSError:
                    entries.append((str(file), -1, -1, -1))
                    continue
                entries.append((str(file), stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(entries)
