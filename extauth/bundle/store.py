"""The policy in force, and safe change: reload on SIGHUP or file change with an atomic swap.

A Check reads `store.current` once and uses that snapshot throughout, so a reload never mixes two
policies in one decision. A reload that fails changes nothing: the last good policy keeps serving, health
stays SERVING, and the failure is logged and audited with every file:line error and counted by reason.
Whatever the failure (an invalid file, or an exception nobody foresaw), the file watch keeps running.

Reading, parsing, validating and compiling take milliseconds to seconds (a large policy directory), so they
run in a worker thread; only the swap happens on the event loop, between two Checks. Reloads are serialized:
a SIGHUP during a file-change reload waits for it, and never races it to the swap.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.bundle.watch import files_fingerprint
from extauth.clock import Clock
from extauth.documents.errors import ConfigError
from extauth.notify import Notify, ignore

log = structlog.get_logger("extauth.policy")

#: Why a reload was rejected: the files do not validate (file:line errors), or loading raised something else.
REJECTED_INVALID = "invalid"
REJECTED_INTERNAL_ERROR = "internal_error"
REJECTION_REASONS = (REJECTED_INVALID, REJECTED_INTERNAL_ERROR)
#: An unexpected exception's text goes into the audit event; the traceback goes to the log only.
_MAX_ERROR_CHARS = 500


@dataclass(slots=True)
class ReloadStats:
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    #: What asked for the last reload (`start` until one ran) and when it ended (Clock.now()).
    last_trigger: str = "start"
    last_finished: float = 0.0
    #: Per-source counters for the metrics endpoint; kept here so tests can read them without one.
    by_trigger: dict[str, int] = field(default_factory=dict)
    #: Rejected reloads by reason, every reason present from the start (a metric at 0 can be alerted on).
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))


class PolicyStore:
    def __init__(self, path: Path, clock: Clock, shadow_path: Path | None = None, notify: Notify = ignore) -> None:
        self.path = path
        self._notify = notify
        self.shadow_path = shadow_path
        self._clock = clock
        self.current = compile_policy(path, clock)
        self.shadow = compile_policy(shadow_path, clock) if shadow_path else None
        self.stats = ReloadStats(last_finished=clock.now())
        self._fingerprint = files_fingerprint(self._roots())
        self._serial = asyncio.Lock()
        self._requested: set[asyncio.Task[bool]] = set()
        self._waiting_request = False
        #: Reloads begun so far: a request is already answered by any reload that began after it was made.
        self._begun = 0

    def request_reload(self, trigger: str) -> None:
        """Reload soon, from synchronous code (a signal handler); serialized with every other reload. Requests
        made while one is still waiting for its turn join it (it reads the files when its turn comes), and one
        whose files a later-begun reload (the watch) already read is answered by it, so a burst of signals, or a
        signal right after an edit, costs at most one reload after the one in progress."""
        if self._waiting_request:
            return
        self._waiting_request = True
        task = asyncio.get_running_loop().create_task(self._requested_reload(trigger, self._begun))
        self._requested.add(task)
        task.add_done_callback(self._requested.discard)

    async def _requested_reload(self, trigger: str, begun_before: int) -> bool:
        async with self._serial:
            self._waiting_request = False
            if self._begun > begun_before:
                return self.stats.last_error is None
            return await self._reload(trigger)

    async def reload(self, trigger: str) -> bool:
        """Recompile both live and shadow policies off the loop; swap only if both compile. True on success."""
        async with self._serial:
            return await self._reload(trigger)

    async def watch(self, interval_seconds: float) -> None:
        """Poll for changes: cheap stats, no extra dependency, and it follows Kubernetes ConfigMap symlink swaps.

        Nothing a policy file holds ends this loop: a reload never raises, and anything else is logged.
        """
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                async with self._serial:
                    if await asyncio.to_thread(self.files_changed):
                        await self._reload("file_change")
            except Exception:
                log.exception("policy_watch_error")

    def _roots(self) -> tuple[Path, ...]:
        return (self.path, self.shadow_path) if self.shadow_path else (self.path,)

    def files_changed(self) -> bool:
        return files_fingerprint(self._roots()) != self._fingerprint

    async def _reload(self, trigger: str) -> bool:
        self._begun += 1
        self.stats.by_trigger[trigger] = self.stats.by_trigger.get(trigger, 0) + 1
        # Taken first: an edit made while compiling reloads again; a rejected one waits for the next edit.
        self._fingerprint = await asyncio.to_thread(files_fingerprint, self._roots())
        try:
            live, shadow = await asyncio.to_thread(self._compile_all)
        except ConfigError as error:
            self._reject(trigger, REJECTED_INVALID, [str(issue) for issue in error.issues])
            return False
        except Exception as error:
            log.error("policy_reload_crashed", trigger=trigger, exc_info=True)
            message = f"{self.path}: unexpected {type(error).__name__} while loading: {error}"
            self._reject(trigger, REJECTED_INTERNAL_ERROR, [message[:_MAX_ERROR_CHARS]])
            return False
        changed = live.version != self.current.version or (
            shadow is not None and self.shadow is not None and shadow.version != self.shadow.version)
        self.current, self.shadow = live, shadow
        self.stats.reloads += 1
        self.stats.last_error = None
        self._finished(trigger)
        log.info("policy_reloaded", trigger=trigger, version=live.version, changed=changed,
                 shadow_version=shadow.version if shadow else None)
        self._notify("policy_reloaded", trigger=trigger, version=live.version, changed=changed,
                     shadow_version=shadow.version if shadow else None)
        return True

    def _compile_all(self) -> tuple[CompiledPolicy, CompiledPolicy | None]:
        """Runs in a worker thread: touches nothing a Check reads."""
        live = compile_policy(self.path, self._clock)
        return live, compile_policy(self.shadow_path, self._clock) if self.shadow_path else None

    def _finished(self, trigger: str) -> None:
        self.stats.last_trigger, self.stats.last_finished = trigger, self._clock.now()

    def _reject(self, trigger: str, reason: str, errors: list[str]) -> None:
        self.stats.failures += 1
        self.stats.rejected[reason] += 1
        self.stats.last_error = "\n".join(errors)
        self._finished(trigger)
        log.error("policy_reload_failed", trigger=trigger, reason=reason, serving_version=self.current.version,
                  errors=errors)
        self._notify("policy_reload_failed", trigger=trigger, reason=reason, serving_version=self.current.version,
                     errors=errors)
