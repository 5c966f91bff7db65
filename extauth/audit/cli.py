"""`extauth audit`: read an audit stream in a terminal during an incident, and verify its hash chain.

    extauth audit verify [--require-sealed] FILE...
    extauth audit [--deny] [--subject S] [--reason R] [--since 10m|ISO] [--request-id ID] [--top N]
                  [--json | --summary] FILE|-
"""

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from extauth.audit.chain import verify

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DECISION_EVENTS = ("decision", "completion")


def register(commands: Any) -> None:
    """Add `audit` to the `extauth` subcommands."""
    audit = commands.add_parser(
        "audit", help="filter and summarise an audit stream, or `audit verify FILE` its hash chain",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("files", nargs="+", metavar="FILE",
                       help="audit JSON-lines files ('-' reads stdin); `verify FILE...` checks the chain")
    audit.add_argument("--deny", action="store_true", help="denials only")
    audit.add_argument("--allow", action="store_true", help="allowed requests only")
    audit.add_argument("--subject", help="this subject only")
    audit.add_argument("--reason", action="append", default=[], help="this reason code only (repeatable)")
    audit.add_argument("--since", type=parse_since, help="10m, 2h, 1d (ago) or an ISO time (UTC unless given)")
    audit.add_argument("--request-id", help="one request: its decision and completion")
    audit.add_argument("--event", choices=("decision", "completion", "all"), default="decision",
                       help="which events to list (default decision; --request-id shows both)")
    audit.add_argument("--top", type=int, default=5, metavar="N", help="rows in each top-N table (default 5)")
    output = audit.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print matching events as JSON lines (for jq)")
    output.add_argument("--summary", action="store_true", help="print only the summary")
    audit.add_argument("--require-sealed", action="store_true",
                       help="verify: a chain without its audit_closed record (cut short) is an error too")
    audit.set_defaults(run=run)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    relative = _RELATIVE.match(text.strip())
    if relative:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[relative[2]]: float(relative[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 10m/2h/1d nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    if args.files[0] == "verify":
        return run_verify(args.files[1:], args.require_sealed, sys.stdout)
    return run_filter(args, sys.stdout)


def run_verify(files: Sequence[str], require_sealed: bool, out: TextIO) -> int:
    if not files:
        print("audit verify: name at least one FILE", file=sys.stderr)
        return 2
    report = verify(_lines(files))
    for problem in report.problems:
        print(f"TAMPERED {problem}", file=out)
    for chain_id in report.unsealed:
        label = "UNSEALED" if require_sealed else "open"
        print(f"{label} chain {chain_id}: no audit_closed record (still running, crashed, or cut short)", file=out)
    verdict = "ok" if report.ok(require_sealed) else "FAILED"
    print(f"{verdict}: {report.lines} lines, {len(report.chains)} chain(s), {len(report.problems)} problem(s)",
          file=out)
    return 0 if report.ok(require_sealed) else 1


def run_filter(args: argparse.Namespace, out: TextIO) -> int:
    events = list(matching(_events(args.files), args))
    if args.json:
        for event in events:
            print(json.dumps(event, separators=(",", ":")), file=out)
        return 0
    if not args.summary:
        for event in events:
            print(format_event(event), file=out)
        if events:
            print(file=out)
    for line in summary(events, args.top):
        print(line, file=out)
    return 0


def matching(events: Iterable[dict[str, Any]], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    kinds = _DECISION_EVENTS if args.event == "all" or args.request_id else (args.event,)
    for event in events:
        if event.get("event") not in kinds:
            continue
        if args.request_id and event.get("request_id") != args.request_id:
            continue
        if event.get("event") == "decision":
            if args.deny and event.get("decision") != "deny":
                continue
            if args.allow and event.get("decision") != "allow":
                continue
            if args.subject is not None and event.get("subject") != args.subject:
                continue
            if args.reason and event.get("reason") not in args.reason:
                continue
        elif args.deny or args.allow or args.subject is not None or args.reason:
            continue
        if args.since is not None and not _after(event.get("ts"), args.since):
            continue
        yield event


def format_event(event: dict[str, Any]) -> str:
    ts = str(event.get("ts", ""))[:23]
    where = f"{event.get('method') or '-'} {event.get('host') or ''}{event.get('path') or ''}"
    if event.get("event") == "completion":
        flags = event.get("response_flags") or "-"
        return (f"{ts}  completion {event.get('status')} {flags:<6} {event.get('bytes_sent')}B "
                f"{(event.get('duration_us') or 0) / 1000:.1f}ms  {where}  {event.get('request_id')}")
    return (f"{ts}  {event.get('decision', '?'):<5} {event.get('status')} {event.get('reason', ''):<22} "
            f"{event.get('subject') or '-':<16} {where}  {event.get('request_id')}")


def summary(events: Sequence[dict[str, Any]], top: int) -> Iterator[str]:
    decisions = [event for event in events if event.get("event") == "decision"]
    counts = Counter(event.get("decision") for event in decisions)
    times = [str(event["ts"]) for event in events if event.get("ts")]
    span = f" from {min(times)} to {max(times)}" if times else ""
    yield (f"{len(events)} events: {counts.get('allow', 0)} allow, {counts.get('deny', 0)} deny, "
           f"{len(events) - len(decisions)} completion{span}")
    tables = (
        ("top reasons", Counter(event.get("reason") for event in decisions)),
        ("top subjects", Counter(event.get("subject") or "(anonymous)" for event in decisions)),
        ("top sources", Counter(event.get("source_address") or "-" for event in decisions)),
        ("top denied paths", Counter(event.get("path") for event in decisions if event.get("decision") == "deny")),
    )
    for title, counter in tables:
        if counter:
            yield f"{title}:"
            for value, count in counter.most_common(top):
                yield f"  {count:>7}  {value}"


def _after(ts: object, since: datetime) -> bool:
    if not isinstance(ts, str):
        return False
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return False
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) >= since


def _lines(files: Sequence[str]) -> Iterator[str]:
    for name in files:
        if name == "-":
            yield from sys.stdin
        else:
            with Path(name).open(encoding="utf-8", errors="replace") as file:
                yield from file


def _events(files: Sequence[str]) -> Iterator[dict[str, Any]]:
    skipped = 0
    for line in _lines(files):
        try:
            event = json.loads(line)
        except ValueError:
            skipped += line.strip() != ""
            continue
        if isinstance(event, dict):
            yield event
    if skipped:
        print(f"({skipped} lines were not JSON and were skipped)", file=sys.stderr)
