"""Operational events (policy reloads, IdP and Redis outages and recoveries) that belong in the audit stream.

Components report state *transitions* through a `Notify` callable (not every failed request), so an auditor
reading the trail sees when the service was degraded and why. The audit writer provides the real one; the
default does nothing, so components stay usable on their own and in tests.
"""

from typing import Any, Protocol


class Notify(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


def ignore(event: str, **fields: Any) -> None:
    """The default: report nothing."""
