"""The hash chain: an untouched stream verifies; removal, reordering, edits and truncation are each caught."""

import asyncio
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from extauth.audit.chain import verify
from extauth.audit.cli import run_verify
from extauth.audit.writer import AuditWriter


def written_stream(path: Path, events: int = 12, instance: str = "test/0") -> list[str]:
    """A real stream from the real writer (started, `events` decisions, closed), appended to `path`."""
    async def write() -> None:
        writer = AuditWriter.open(path, instance, linger_seconds=0)
        await writer.start()
        for index in range(events):
            writer.emit({"event": "decision", "request_id": f"{instance}-r{index}", "decision": "deny",
                         "status": 403, "reason": "forbidden"})
        await writer.close()
    asyncio.run(write())
    return path.read_text().splitlines(keepends=True)


@pytest.fixture
def lines(tmp_path: Path) -> list[str]:
    return written_stream(tmp_path / "audit.jsonl")


def test_untouched_stream_verifies_and_is_sealed(lines: list[str]) -> None:
    """A stream as written has no problems and its chain ends with audit_closed."""
    report = verify(lines)
    assert report.ok(require_sealed=True) and report.problems == [] and len(report.chains) == 1


def test_interleaved_chains_of_two_instances_verify(tmp_path: Path) -> None:
    """Two workers (or restarts) appending to one file are two chains, each checked on its own."""
    path = tmp_path / "audit.jsonl"
    first = written_stream(path, instance="host/0")
    second = written_stream(tmp_path / "other.jsonl", instance="host/1")
    mixed = [line for pair in zip(first, second, strict=False) for line in pair]
    report = verify(mixed)
    assert report.ok(require_sealed=True) and len(report.chains) == 2


def test_removed_line_is_caught(lines: list[str]) -> None:
    """Deleting one line reports the missing seq at the line after it."""
    report = verify(lines[:5] + lines[6:])
    assert len(report.problems) == 1 and "missing before it" in report.problems[0]
    assert report.problems[0].startswith("line 6:")


def test_reordered_lines_are_caught(lines: list[str]) -> None:
    """Swapping two lines is reported."""
    swapped = [*lines[:4], lines[5], lines[4], *lines[6:]]
    report = verify(swapped)
    assert report.problems and any("out of order" in problem for problem in report.problems)


def test_edited_line_is_caught(lines: list[str]) -> None:
    """Changing a decision in place (deny → allow) breaks that line's hash."""
    edited = list(lines)
    edited[3] = edited[3].replace('"decision":"deny"', '"decision":"allow"')
    report = verify(edited)
    assert report.problems == [report.problems[0]] and "edited" in report.problems[0]
    assert report.problems[0].startswith("line 4:")


def test_edited_line_with_recomputed_hash_is_caught_by_the_next_link(lines: list[str]) -> None:
    """A forger who also recomputes the edited line's own hash still breaks the next line's prev_hash."""
    event_line = lines[3].replace('"decision":"deny"', '"decision":"allow"').rstrip("\n")
    body = re.sub(r',"hash":"[0-9a-f]{64}"}$', "}", event_line)
    forged = f'{body[:-1]},"hash":"{hashlib.sha256(body.encode()).hexdigest()}"}}\n'
    report = verify([*lines[:3], forged, *lines[4:]])
    assert len(report.problems) == 1 and report.problems[0].startswith("line 5:")
    assert "does not link" in report.problems[0]


def test_line_cut_in_the_middle_is_caught(lines: list[str]) -> None:
    """A file cut inside a line leaves a line that is not complete JSON."""
    report = verify([*lines[:-1], lines[-1][:40]])
    assert report.problems and "not a complete JSON object" in report.problems[-1]


def test_lines_cut_off_the_end_leave_the_chain_unsealed(lines: list[str]) -> None:
    """Whole lines removed from the end take audit_closed with them: an error when a seal is required."""
    report = verify(lines[:-3])
    assert report.problems == [] and report.unsealed
    assert not report.ok(require_sealed=True) and report.ok()


def test_removed_first_line_is_caught(lines: list[str]) -> None:
    """Cutting the head of a chain is caught: its first remaining line does not start at seq 1."""
    assert verify(lines[1:]).problems


def test_verify_command_exit_status_and_messages(tmp_path: Path, lines: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`extauth audit verify` exits 0 on an intact file and 1 naming the tampered line otherwise."""
    good = tmp_path / "good.jsonl"
    good.write_text("".join(lines))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines[:2] + lines[3:]))
    assert run_verify([str(good)], require_sealed=True, out=sys.stdout) == 0
    assert "ok: 14 lines, 1 chain(s), 0 problem(s)" in capsys.readouterr().out
    assert run_verify([str(bad)], require_sealed=False, out=sys.stdout) == 1
    assert "TAMPERED line 3:" in capsys.readouterr().out


def test_every_written_line_is_json_with_hash_last(lines: list[str]) -> None:
    """Each line parses as JSON and `hash` is its last field (what verification relies on)."""
    for line in lines:
        event = json.loads(line)
        assert list(event)[-1] == "hash" and len(event["hash"]) == 64
