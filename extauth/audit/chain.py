"""Tamper evidence: every line of an instance's audit stream names the hash of the line before it.

A writer (one per process start, identified by `chain`) numbers its lines from `seq` 1, sets `prev_hash` to the
previous line's `hash` (64 zeros for the first) and appends `"hash"` last: the SHA-256 of the line as it
reads without that field. Editing a line breaks its hash; removing or reordering lines breaks `seq` and
`prev_hash`; a cut inside a line leaves invalid JSON; lines cut off the end take the closing `audit_closed`
record with them, which `verify(..., require_sealed=True)` reports. Several chains (workers, restarts) may
interleave in one file; each is checked on its own.

Given the public key(s), `verify` also checks the signed checkpoints (signing.py): every `audit_checkpoint`
and `audit_closed` must carry a valid signature, every chain at least one, and a chain is sealed only when it
ends with a signed `audit_closed`; lines after its last checkpoint are reported as its unsealed tail.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from extauth.audit.signing import CHECKPOINT_EVENT, Verifier

GENESIS = "0" * 64
CLOSED_EVENT = "audit_closed"
SIGNED_EVENTS = (CHECKPOINT_EVENT, CLOSED_EVENT)
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
    #: With public keys: lines whose signature verified, the seq of the last one, and lines after it.
    checkpoints: int = 0
    checkpoint_seq: int = 0
    unsigned_tail: int = 0

    def describe_unsealed(self, signed: bool) -> str:
        if not signed:
            return "no audit_closed record (still running, crashed, or cut short)"
        tail = (f"unsealed tail of {self.unsigned_tail} events after its last checkpoint (seq {self.checkpoint_seq})"
                if self.unsigned_tail else f"ends at checkpoint seq {self.checkpoint_seq}")
        return f"{tail}, no signed audit_closed (still running, crashed, or cut short)"


@dataclass
class VerifyReport:
    lines: int = 0
    problems: list[str] = field(default_factory=list)
    chains: dict[str, ChainState] = field(default_factory=dict)
    #: Whether signatures were checked (the verifier had public keys).
    signed: bool = False

    @property
    def unsealed(self) -> list[str]:
        return [chain_id for chain_id, state in self.chains.items() if not state.sealed]

    def ok(self, require_sealed: bool = False) -> bool:
        return not self.problems and not (require_sealed and self.unsealed)


def verify(lines: Iterable[str], verifier: Verifier | None = None,
           locate: Callable[[int], str] = "line {}".format) -> VerifyReport:
    """Check every line's hash and its link to the previous line of its chain, and with a `verifier` the
    checkpoint signatures; problems name the line, as `locate` spells its number (`FILE:N` across files)."""
    report = VerifyReport(signed=verifier is not None)
    for number, raw in enumerate(lines, start=1):
        report.lines = number
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        problem = _check_line(report, number, line, verifier)
        if problem:
            report.problems.append(f"{locate(number)}: {problem}")
    if verifier is not None:
        report.problems.extend(
            f"{locate(state.first_line)}: chain {chain_id} has no validly signed checkpoint (forged, or written "
            "without audit.signing_key)" for chain_id, state in report.chains.items() if not state.checkpoints)
    return report


def _check_line(report: VerifyReport, number: int, line: str, verifier: Verifier | None) -> str | None:
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
    kind = event.get("event")
    state.sealed = kind == CLOSED_EVENT
    if verifier is not None:
        signature_problem = verifier.problem(body, event.get("key_id")) if kind in SIGNED_EVENTS else None
        if kind in SIGNED_EVENTS and signature_problem is None:
            state.checkpoints += 1
            state.checkpoint_seq, state.unsigned_tail = seq, 0
        else:
            state.unsigned_tail += 1
            state.sealed = False
            if signature_problem:
                problem = problem or f"{kind} of chain {chain_id} (seq {seq}) {signature_problem}"
    return problem
