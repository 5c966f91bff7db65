"""`extauth audit`: read an audit stream in a terminal during an incident, verify its hash chain and signed
checkpoints, create a checkpoint signing key. Options may come before or after the files.

    extauth audit verify [--require-sealed] [--public-key PUB.pem]... FILE...
    extauth audit keygen [--force] DIR
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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauth.audit.chain import verify
from extauth.audit.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, Verifier, load_public_key, write_key_pair

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DECISION_EVENTS = ("decision", "completion")


def register(commands: Any) -> None:
    """List `audit` in `extauth --help`; `extauth.cli.main` hands its arguments to `main` here, because argparse
    cannot mix a subcommand (`verify`, `keygen`) with a default form that takes FILEs."""
    commands.add_parser("audit", add_help=False,
                        help="filter and summarise an audit stream; `audit verify FILE` checks its chain and "
                             "signatures; `audit keygen DIR` creates a checkpoint signing key")


def main(argv: Sequence[str]) -> int:
    """`extauth audit ARGS`, parsed intermixed so `verify --require-sealed FILE` and `verify FILE --require-sealed`
    mean the same (one parser taking `verify` as its first FILE rejected the first spelling)."""
    if argv[:1] == ["verify"]:
        args = _verify_parser().parse_intermixed_args(argv[1:])
        return run_verify(args.files, args.require_sealed, sys.stdout, args.public_key)
    if argv[:1] == ["keygen"]:
        args = _keygen_parser().parse_intermixed_args(argv[1:])
        return run_keygen(args.directory, args.force, sys.stdout)
    return run_filter(_filter_parser().parse_intermixed_args(argv), sys.stdout)


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extauth audit verify",
                                     description="check the hash chain (and with --public-key the signed "
                                                 "checkpoints) of audit files; exit 1 on any problem")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audit JSON-lines files ('-' reads stdin)")
    parser.add_argument("--require-sealed", action="store_true",
                        help="a chain not ending with its (signed) audit_closed record is an error too")
    parser.add_argument("--public-key", action="append", default=[], type=_public_key, metavar="PUB.pem",
                        help="Ed25519 public key the checkpoints must be signed with (repeatable: key rotation)")
    return parser


def _keygen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extauth audit keygen",
                                     description=f"create DIR/{PRIVATE_KEY_NAME} (for audit.signing_key, mode "
                                                 f"0600) and DIR/{PUBLIC_KEY_NAME} (for audit verify)")
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("--force", action="store_true", help="replace an existing pair")
    return parser


def _filter_parser() -> argparse.ArgumentParser:
    audit = argparse.ArgumentParser(prog="extauth audit", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("files", nargs="+", metavar="FILE", help="audit JSON-lines files ('-' reads stdin)")
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
    return audit


def _public_key(text: str) -> Ed25519PublicKey:
    try:
        return load_public_key(Path(text))
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    relative = _RELATIVE.match(text.strip())
    if relative:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[relative[2]]: float(relative[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 10m/2h/1d nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_verify(files: Sequence[str], require_sealed: bool, out: TextIO,
               public_keys: Sequence[Ed25519PublicKey] = ()) -> int:
    report = verify(_lines(files), Verifier.of(public_keys) if public_keys else None)
    for problem in report.problems:
        print(f"TAMPERED {problem}", file=out)
    for chain_id in report.unsealed:
        label = "UNSEALED" if require_sealed else "open"
        print(f"{label} chain {chain_id}: {report.chains[chain_id].describe_unsealed(report.signed)}", file=out)
    verdict = "ok" if report.ok(require_sealed) else "FAILED"
    signatures = (f", {sum(state.checkpoints for state in report.chains.values())} signed checkpoint(s) verified"
                  if report.signed else ", signatures not checked (no --public-key)")
    print(f"{verdict}: {report.lines} lines, {len(report.chains)} chain(s), {len(report.problems)} problem(s)"
          f"{signatures}", file=out)
    return 0 if report.ok(require_sealed) else 1


def run_keygen(directory: Path, force: bool, out: TextIO) -> int:
    existing = [path for path in (directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME) if path.exists()]
    if existing and not force:
        print(f"{existing[0]} exists; --force replaces the pair (keep the old public key to verify old files)",
              file=sys.stderr)
        return 1
    private_path, public_path = write_key_pair(directory, force=True)
    print(f"signing key (audit.signing_key): {private_path}\npublic key (audit verify --public-key): {public_path}",
          file=out)
    return 0


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
