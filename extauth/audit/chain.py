"""Tamper evidence: every line of an instance's audit stream names the hash of the line before it.

A writer (one per process start, identified by `chain`) numbers its lines from `seq` 1, sets `prev_hash` to the
previous line's `hash` (64 zeros for the first) and appends `"hash"` last: the SHA-256 of the line as it
reads without that field. Editing a line breaks its hash; removing or reordering lines breaks `seq` and
`prev_hash`; a cut inside a line leaves invalid JSON; lines cut off the end take the closing `audit_closed`
record with them, which `verify(..., require_sealed=True)` reports. Several chains (workers, restarts) may
interleave in one file; each is checked on its own.
"""

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

GENESIS = "0" * 64
CLOSED_EVENT = "audit_closed"
_HASH_SUFFIX = re.compile(r',"hash":"([0-9a-f]{64})"}$')


class HashChain:
    """Links rendered events; used only by the writer task, so chain order is file order."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.seq = 0
        self.last_hash = GENESIS

    def stamp(self, event: dict[str, object]) -> None:
        """Add `chain`, `seq` and `prev_hash` before the event is rendered."""
        self.seq += 1
        event["chain"] = self.chain_id
        event["seq"] = self.seq
        event["prev_hash"] = self.last_hash

    def seal(self, rendered: str) -> str:
        """A rendered JSON object (ending in `}`) → the line with its `hash` appended, newline included."""
        digest = hashlib.sha256(rendered.encode()).hexdigest()
        self.last_hash = digest
        return f'{rendered[:-1]},"hash":"{digest}"}}\n'


@dataclass
class ChainState:
    chain_id: str
    first_line: int
    events: int = 0
    next_seq: int = 1
    last_hash: str = GENESIS
    sealed: bool = False


@dataclass
class VerifyReport:
    lines: int = 0
    problems: list[str] = field(default_factory=list)
    chains: dict[str, ChainState] = field(default_factory=dict)

    @property
    def unsealed(self) -> list[str]:
        return [chain_id for chain_id, state in self.chains.items() if not state.sealed]

    def ok(self, require_sealed: bool = False) -> bool:
        return not self.problems and not (require_sealed and self.unsealed)


def verify(lines: Iterable[str]) -> VerifyReport:
    """Check every line's hash and its link to the previous line of its chain; problems name the line."""
    report = VerifyReport()
    for number, raw in enumerate(lines, start=1):
        report.lines = number
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        problem = _check_line(report, number, line)
        if problem:
            report.problems.append(f"line {number}: {problem}")
    return report


def _check_line(report: VerifyReport, number: int, line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return "not a complete JSON object (cut short or corrupted)"
    match = _HASH_SUFFIX.search(line)
    if not isinstance(event, dict) or match is None or not isinstance(event.get("chain"), str):
        return "has no chain fields (not written by an extauth audit writer, or edited)"
    chain_id, seq, prev_hash = event["chain"], event.get("seq"), event.get("prev_hash")
    if not isinstance(seq, int):
        return "has no seq"
    state = report.chains.get(chain_id)
    if state is None:
        state = report.chains[chain_id] = ChainState(chain_id, number)
    body = line[:match.start()] + "}"
    digest = hashlib.sha256(body.encode()).hexdigest()
    problem = None
    if digest != match[1]:
        problem = f"edited: its hash does not match its content (chain {chain_id}, seq {seq})"
    elif seq > state.next_seq:
        problem = (f"{seq - state.next_seq} line(s) of chain {chain_id} missing before it "
                   f"(expected seq {state.next_seq}, found {seq})")
    elif seq < state.next_seq:
        problem = f"out of order: seq {seq} of chain {chain_id} after seq {state.next_seq - 1}"
    elif prev_hash != state.last_hash:
        problem = f"does not link to the previous line of chain {chain_id} (a line was replaced or edited)"
    state.events += 1
    state.next_seq = max(state.next_seq, seq + 1)
    state.last_hash = match[1]
    state.sealed = event.get("event") == CLOSED_EVENT
    return problem
