"""`extauth audit`: filters (--deny, --subject, --reason, --since, --request-id, --event for every kind) and the
top-N summary; `audit verify` names what makes a file fail."""

import asyncio
import contextlib
import io
import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.audit.cli import parse_since
from extauth.audit.writer import AuditWriter
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


OPERATIONAL = [
    {"event": "audit_started", "ts": "2026-11-24T10:00:30.000000Z", "queue_size": 10000, "instance": "gw/0"},
    {"event": "policy_reload_failed", "trigger": "sighup", "reason": "invalid", "serving_version": "f071adbe",
     "errors": ["policies/broken.yaml:6: routes[0].match.path: paths start with '/'"],
     "ts": "2026-11-24T10:01:00.000000Z", "instance": "gw/0", "chain": "gw/0/a27a", "seq": 5},
    {"event": "jwks_unavailable", "provider": "corp", "error": "timeout", "serving_last_good_keys": True,
     "ts": "2026-11-24T10:02:00.000000Z", "instance": "gw/0"},
    {"event": "policy_reloaded", "trigger": "file_change", "version": "9a1b", "changed": True,
     "ts": "2026-11-24T10:03:00.000000Z", "instance": "gw/0"},
]


@pytest.fixture
def mixed_stream(stream: Path) -> Path:
    with stream.open("a") as file:
        file.writelines(json.dumps(item) + "\n" for item in OPERATIONAL)
    return stream


def test_event_filter_lists_an_operational_kind_with_its_fields(
        mixed_stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--event policy_reload_failed` (as docs/audit.md shows) lists those records with their own fields."""
    out = run(capsys, "--event", "policy_reload_failed", str(mixed_stream))
    listed = out.split("\n\n")[0].splitlines()
    assert len(listed) == 1 and listed[0].startswith("2026-11-24T10:01:00.000  policy_reload_failed  ")
    assert 'trigger="sighup"' in listed[0] and "routes[0].match.path" in listed[0] and "seq=" not in listed[0]
    assert "1 events: 0 allow, 0 deny, 0 completion, 1 policy_reload_failed" in out


def test_event_all_includes_operational_and_stream_records(
        mixed_stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--event all` lists every record, decisions, completions, stream and operational records alike."""
    out = run(capsys, "--json", "--event", "all", str(mixed_stream))
    kinds = [json.loads(line)["event"] for line in out.splitlines()]
    assert kinds == ["decision"] * 4 + ["completion", "audit_started", "audit_started", "policy_reload_failed",
                                        "jwks_unavailable", "policy_reloaded"]


def test_event_is_repeatable_and_other_filters_keep_to_decisions(
        mixed_stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several --event kinds combine; --deny still selects decisions only, as it does for completions."""
    out = run(capsys, "--json", "--event", "policy_reloaded", "--event", "jwks_unavailable", str(mixed_stream))
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["jwks_unavailable", "policy_reloaded"]
    out = run(capsys, "--json", "--event", "all", "--deny", str(mixed_stream))
    assert {json.loads(line)["event"] for line in out.splitlines()} == {"decision"}


def test_an_unknown_event_kind_is_a_one_line_usage_error(stream: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kind that does not exist is refused (exit 2) in one line listing the kinds."""
    with pytest.raises(SystemExit) as exit:
        main(["audit", "--event", "policy_reload_faild", str(stream)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "'policy_reload_failed'" in err


def test_input_without_any_json_is_not_an_audit_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file of text lines is an input error (exit 2, one line); an empty file is an empty stream."""
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    assert main(["audit", str(text)]) == 2
    assert capsys.readouterr().err == f"extauth audit: error: {text}: no JSON line in 2 line(s): not an audit stream\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["audit", str(empty)]) == 0 and capsys.readouterr().out.startswith("0 events")


def _closed_chain(path: Path, events: int) -> list[str]:
    """A real unsigned stream from the real writer: audit_started, `events` decisions, audit_closed."""
    async def write() -> None:
        writer = AuditWriter.open(path, "test/0", linger_seconds=0)
        await writer.start()
        for index in range(events):
            writer.emit({"event": "decision", "request_id": f"r{index}", "decision": "deny", "status": 403,
                         "reason": "forbidden"})
        await writer.close()
    asyncio.run(write())
    return path.read_text().splitlines(keepends=True)


@pytest.fixture(scope="module")
def closed_chain(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _closed_chain(tmp_path_factory.mktemp("chain") / "audit.jsonl", 6)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_a_cut_stream_fails_require_sealed_naming_the_unsealed_chain(
        closed_chain: list[str], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Any cut of a closed stream (whole lines or inside a line), with `--require-sealed` before or after FILE:
    exit 1, the unsealed chain or the broken line named, and a verdict that counts it (never `0 problem(s)`)."""
    text = "".join(closed_chain)  # keeping all but the final newline would leave every line whole: not a cut
    cut = data.draw(st.integers(min_value=1, max_value=len(text) - 2), label="characters kept")
    path = tmp_path_factory.mktemp("cut") / "audit.jsonl"
    path.write_text(text[:cut])
    first = data.draw(st.booleans(), label="--require-sealed first")
    argv = ["audit", "verify", "--require-sealed", str(path)] if first else ["audit", "verify", str(path),
                                                                             "--require-sealed"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 1
    lines = out.getvalue().splitlines()
    verdict = lines[-1]
    assert verdict.startswith("FAILED: ") and " 0 problem(s)" not in verdict
    if text[:cut].endswith("\n") or text[cut] == "\n":  # whole lines kept: the chain has no audit_closed
        assert any(line.startswith("UNSEALED chain test/0/") and "no audit_closed" in line for line in lines)
        assert "(1 unsealed chain(s))" in verdict
    elif cut > len(closed_chain[0]):  # a line cut short, after a complete first line
        assert any(line.startswith("TAMPERED line ") and "not a complete JSON object" in line for line in lines)
        assert "tampered or unverifiable line(s)" in verdict


def test_a_sealed_stream_passes_require_sealed_in_either_order(
        closed_chain: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The untouched stream passes `verify --require-sealed FILE` and `verify FILE --require-sealed`."""
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(closed_chain))
    assert main(["audit", "verify", "--require-sealed", str(path)]) == 0
    assert main(["audit", "verify", str(path), "--require-sealed"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: 8 lines, 1 chain(s), 0 problem(s)")


def test_an_empty_file_fails_require_sealed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file emptied (or never written) proves nothing sealed: `--require-sealed` fails and says so."""
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    assert main(["audit", "verify", str(path)]) == 0
    assert main(["audit", "verify", "--require-sealed", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"EMPTY: no audit chain in {path}, nothing to prove sealed"
    assert out[-1].startswith("FAILED: 0 lines, 0 chain(s), 1 problem(s) (1 empty input)")


CLIENT_TEXT = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["\x1b[2J\x1b[H", "\x1b]52;c;ZXZpbA==\x07", "ok\u202egpj.exe", "a\r\nb", "\x85\u2028\u2029", "\x00\x7f\x9b"])


@given(path=CLIENT_TEXT, subject=CLIENT_TEXT, host=CLIENT_TEXT, reason=CLIENT_TEXT, kind=CLIENT_TEXT)
@settings(max_examples=150, deadline=None)
def test_client_text_cannot_drive_the_operators_terminal(
        tmp_path_factory: pytest.TempPathFactory, path: str, subject: str, host: str, reason: str, kind: str) -> None:
    """Escape sequences, bidi overrides and line breaks in an event's client-chosen fields (path, host, subject,
    reason, even the kind) print escaped: two events list as two lines, and no control or format character
    reaches the terminal from the listing or the summary."""
    stream = tmp_path_factory.mktemp("hostile") / "audit.jsonl"
    stream.write_text(json.dumps(event("r1", "deny", reason, subject, "2026-11-24T10:00:00Z", path=path, host=host))
                      + "\n" + json.dumps({"event": kind, "ts": "2026-11-24T10:00:01Z", "note": path}) + "\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "--event", "all", str(stream)]) == 0
    listing, _, tables = out.getvalue().partition("\n\n")
    assert len(listing.split("\n")) == 2
    assert all(re.match(r"\d+ events: |top [a-z ]+:$| +\d+  ", line) for line in tables.split("\n")[:-1])
    printed = out.getvalue().replace("\n", "")
    assert [char for char in printed if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}] == []


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)
FIELD_NAMES = st.sampled_from(["event", "ts", "decision", "status", "reason", "subject", "method", "host", "path",
                               "request_id", "source_address", "response_flags", "bytes_sent", "duration_us",
                               "instance"])
FOREIGN_FIELDS = st.dictionaries(FIELD_NAMES, JSON_VALUE, max_size=10)
FOREIGN_EVENT = FOREIGN_FIELDS | FOREIGN_FIELDS.map(lambda fields: {**fields, "event": "decision"}) | \
    FOREIGN_FIELDS.map(lambda fields: {**fields, "event": "completion"})


@given(events=st.lists(FOREIGN_EVENT, min_size=1, max_size=5),
       options=st.sampled_from([[], ["--event", "all"], ["--summary", "--event", "all"], ["--deny"],
                                ["--since", "1d", "--event", "all"], ["--request-id", "r1"]]))
@settings(max_examples=200, deadline=None)
def test_a_damaged_or_foreign_stream_is_listed_not_crashed_on(
        tmp_path_factory: pytest.TempPathFactory, events: list[dict], options: list[str]) -> None:
    """JSON objects whose fields have unexpected types (lists, objects, numbers, null where text is expected)
    are listed and summarised (exit 0): a damaged file is what one reads during an incident."""
    stream = tmp_path_factory.mktemp("foreign") / "audit.jsonl"
    stream.write_text("".join(json.dumps(item) + "\n" for item in events))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", *options, str(stream)]) == 0
    assert " events: " in out.getvalue()


def test_verify_across_rotated_files_names_the_file_and_its_line(
        closed_chain: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A chain split over two files verifies as one; a line edited in the second is named `FILE:N` there."""
    first, second = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    first.write_text("".join(closed_chain[:3]))
    second.write_text("".join(closed_chain[3:]))
    assert main(["audit", "verify", "--require-sealed", str(first), str(second)]) == 0
    second.write_text("".join(closed_chain[3:4]) + closed_chain[4].replace('"r3"', '"r9"')
                      + "".join(closed_chain[5:]))
    assert main(["audit", "verify", str(first), str(second)]) == 1
    out = capsys.readouterr().out
    assert f"TAMPERED {second}:2: edited: its hash does not match its content" in out
