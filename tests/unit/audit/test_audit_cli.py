"""`extauth audit`: filters (--deny, --subject, --reason, --since, --request-id) and the top-N summary."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from extauth.audit.cli import parse_since
from extauth.cli import main


def event(request_id: str, decision: str, reason: str, subject: str | None, ts: str, **extra: object) -> dict:
    return {"event": "decision", "request_id": request_id, "decision": decision, "reason": reason,
            "status": 200 if decision == "allow" else 403, "subject": subject, "ts": ts, "method": "GET",
            "host": "api.example", "path": "/api/x", "source_address": "192.0.2.1", **extra}


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    events = [
        event("r1", "allow", "ok", "alice", "2026-11-24T10:00:00.000000Z"),
        event("r2", "deny", "forbidden", "alice", "2026-11-24T10:05:00.000000Z"),
        event("r3", "deny", "missing_token", None, "2026-11-24T10:10:00.000000Z"),
        event("r4", "deny", "forbidden", "bob", "2026-11-24T10:15:00.000000Z"),
        {"event": "completion", "request_id": "r2", "status": 403, "response_flags": "UAEX",
         "ts": "2026-11-24T10:05:00.000100Z", "bytes_sent": 60, "duration_us": 900},
        {"event": "audit_started", "ts": "2026-11-24T09:00:00.000000Z"},
    ]
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in events) + "not json\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["audit", *args]) == 0
    return capsys.readouterr().out


def test_deny_filter_lists_only_denials_with_a_summary(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--deny lists the three denials and summarises top reasons and subjects."""
    out = run(capsys, "--deny", str(stream))
    assert [line.split()[-1] for line in out.splitlines()[:3]] == ["r2", "r3", "r4"]
    assert "3 events: 0 allow, 3 deny, 0 completion" in out
    assert "top reasons:\n        2  forbidden\n        1  missing_token" in out
    assert "(anonymous)" in out


def test_subject_reason_and_since_combine(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--subject, --reason and --since narrow the same stream together."""
    out = run(capsys, "--json", "--subject", "alice", "--reason", "forbidden", "--since", "2026-11-24T10:01",
              str(stream))
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == ["r2"]


def test_request_id_shows_decision_and_completion(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--request-id joins one request's decision and its completion."""
    out = run(capsys, "--request-id", "r2", str(stream))
    assert "deny  403 forbidden" in out and "completion 403 UAEX" in out


def test_summary_only(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--summary prints the counts and tables without listing events."""
    out = run(capsys, "--summary", "--top", "1", str(stream))
    assert out.startswith("4 events: 1 allow, 3 deny") and "top subjects:\n        2  alice\n" in out


def test_since_accepts_relative_durations() -> None:
    """`10m`, `2h` and `1d` are that long before now; an ISO time without a zone is UTC."""
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == datetime(2026, 11, 24, 11, 50, tzinfo=UTC)
    assert parse_since("1d", now) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-24T10:00") == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
