"""`extauth audit`: read an audit stream in a terminal during an incident, verify its hash chain and signed
checkpoints, create a checkpoint signing key. Options may come before or after the files.

    extauth audit verify [--require-sealed] [--public-key PUB.pem]... FILE...
    extauth audit keygen [--force] DIR
    extauth audit tail [--deny] [--subject S] [--reason R] [--route R] [--event KIND]... [--json] [--admin ADDRESS]
    extauth audit [--deny] [--subject S] [--reason R] [--since 10m|ISO] [--request-id ID] [--top N]
                  [--event KIND|all]... [--json | --summary] FILE|-
"""

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauth.audit.chain import verify
from extauth.audit.kinds import DECISION_EVENTS, EVENT_KINDS
from extauth.audit.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, Verifier, load_public_key, write_key_pair
from extauth.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandParser, printable

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: Fields every record carries: not repeated when an event without a format of its own is listed.
_COMMON_FIELDS = ("schema_version", "event", "ts", "instance", "chain", "seq", "prev_hash", "hash", "signature")


def register(commands: Any) -> None:
    """List `audit` in `extauth --help`; `extauth.cli.main` hands its arguments to `main` here, because argparse
    cannot mix a subcommand (`verify`, `keygen`) with a default form that takes FILEs."""
    commands.add_parser("audit", add_help=False,
                        help="filter and summarise an audit stream; `audit verify FILE` checks its chain and "
                             "signatures; `audit keygen DIR` creates a checkpoint signing key")


def main(argv: Sequence[str]) -> int:
    """`extauth audit ARGS`, parsed intermixed so `verify --require-sealed FILE` and `verify FILE --require-sealed`
    mean the same (one parser taking `verify` as its first FILE rejected the first spelling)."""
    parsers = forms()
    form = argv[0] if argv[:1] and argv[0] in parsers else ""
    args = parsers[form].parse_intermixed_args(argv[1:] if form else argv)
    return int(args.run(args))


#: Forms a higher layer adds: `tail`, which reads a running process through the admin API (added by extauth.cli).
_ADDED_FORMS: dict[str, Callable[[], argparse.ArgumentParser]] = {}


def add_form(name: str, build: Callable[[], argparse.ArgumentParser]) -> None:
    _ADDED_FORMS[name] = build


def forms() -> dict[str, argparse.ArgumentParser]:
    """Each form of `extauth audit` by its first word ("" for the filter, which takes FILEs): `main` dispatches
    on it, and the CLI tests walk every one."""
    added = {name: build() for name, build in _ADDED_FORMS.items()}
    return {"verify": _verify_parser(), "keygen": _keygen_parser(), **added, "": _filter_parser()}


def _verify_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="extauth audit verify",
                                     description="check the hash chain (and with --public-key the signed "
                                                 "checkpoints) of audit files; exit 1 on any problem")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audit JSON-lines files ('-' reads stdin)")
    parser.add_argument("--require-sealed", action="store_true",
                        help="a chain not ending with its (signed) audit_closed record is an error too")
    parser.add_argument("--public-key", action="append", default=[], type=_public_key, metavar="PUB.pem",
                        help="Ed25519 public key the checkpoints must be signed with (repeatable: key rotation)")
    parser.set_defaults(run=lambda args: run_verify(args.files, args.require_sealed, sys.stdout, args.public_key))
    return parser


def _keygen_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="extauth audit keygen",
                                     description=f"create DIR/{PRIVATE_KEY_NAME} (for audit.signing_key, mode "
                                                 f"0600) and DIR/{PUBLIC_KEY_NAME} (for audit verify)")
    parser.add_argument("directory", type=Path, metavar="DIR", help="where to write the key pair (created if absent)")
    parser.add_argument("--force", action="store_true", help="replace an existing pair")
    parser.set_defaults(run=lambda args: run_keygen(args.directory, args.force, sys.stdout))
    return parser


def _filter_parser() -> argparse.ArgumentParser:
    audit = CommandParser(prog="extauth audit", description=__doc__, epilog=_event_kinds_help(),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("files", nargs="+", metavar="FILE", help="audit JSON-lines files ('-' reads stdin)")
    audit.add_argument("--deny", action="store_true", help="denials only")
    audit.add_argument("--allow", action="store_true", help="allowed requests only")
    audit.add_argument("--subject", help="this subject only")
    audit.add_argument("--reason", action="append", default=[], help="this reason code only (repeatable)")
    audit.add_argument("--since", type=parse_since, help="10m, 2h, 1d (ago) or an ISO time (UTC unless given)")
    audit.add_argument("--request-id", help="one request: its decision and completion")
    audit.add_argument("--event", action="append", choices=(*EVENT_KINDS, "all"), metavar="KIND",
                       help="list events of this kind (repeatable; `all` for every kind; default decision, and "
                            "decision and completion with --request-id); the kinds are listed below")
    audit.add_argument("--top", type=int, default=5, metavar="N", help="rows in each top-N table (default 5)")
    output = audit.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print matching events as JSON lines (for jq)")
    output.add_argument("--summary", action="store_true", help="print only the summary")
    audit.set_defaults(run=lambda args: run_filter(args, sys.stdout))
    return audit


def _event_kinds_help() -> str:
    width = max(map(len, EVENT_KINDS))
    return "event kinds (--event):\n" + "\n".join(f"  {kind:<{width}}  {what}" for kind, what in EVENT_KINDS.items())


def _public_key(text: str) -> Ed25519PublicKey:
    try:
        return load_public_key(Path(text))
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error.strerror or error}") from None
    except ValueError as error:
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
    """Print each problem on its own line, then a verdict that counts and names them, so a failure never reads
    `FAILED: ... 0 problem(s)` (an unsealed chain under --require-sealed is a problem too)."""
    stream = _Input(files)
    report = verify(stream, Verifier.of(public_keys) if public_keys else None, stream.locate)
    for problem in report.problems:
        print(printable(f"TAMPERED {problem}"), file=out)  # chain ids come from the file: escape what it holds
    for chain_id in report.unsealed:
        label = "UNSEALED" if require_sealed else "open"
        print(printable(f"{label} chain {chain_id}: {report.chains[chain_id].describe_unsealed(report.signed)}"),
              file=out)
    failures = Counter[str]()
    failures["tampered or unverifiable line(s)"] = len(report.problems)
    if require_sealed:
        failures["unsealed chain(s)"] = len(report.unsealed)
        if not report.chains and not report.problems:
            print(f"EMPTY: no audit chain in {', '.join(files)}, nothing to prove sealed", file=out)
            failures["empty input"] = 1
    named = ", ".join(f"{count} {what}" for what, count in failures.items() if count)
    signatures = (f", {sum(state.checkpoints for state in report.chains.values())} signed checkpoint(s) verified"
                  if report.signed else ", signatures not checked (no --public-key)")
    print(f"{'FAILED' if named else 'ok'}: {report.lines} lines, {len(report.chains)} chain(s), "
          f"{failures.total()} problem(s){f' ({named})' if named else ''}{signatures}", file=out)
    return EXIT_FAILED if named else EXIT_OK


def run_keygen(directory: Path, force: bool, out: TextIO) -> int:
    existing = [path for path in (directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME) if path.exists()]
    if existing and not force:
        print(f"{existing[0]} exists; --force replaces the pair (keep the old public key to verify old files)",
              file=sys.stderr)
        return EXIT_USAGE
    private_path, public_path = write_key_pair(directory, force=True)
    print(f"signing key (audit.signing_key): {private_path}\npublic key (audit verify --public-key): {public_path}",
          file=out)
    return EXIT_OK


def run_filter(args: argparse.Namespace, out: TextIO) -> int:
    """List each matching event as it is read (so `tail -f FILE | extauth audit -` shows them live), then the
    summary; Ctrl-C still prints the summary of what was read before stopping."""
    events: list[dict[str, Any]] = []
    live = "-" in args.files
    try:
        for event in matching(_events(args.files), args):
            events.append(event)
            if args.json:
                print(json.dumps(event, separators=(",", ":")), file=out, flush=live)
            elif not args.summary:
                print(format_event(event), file=out, flush=live)
    except KeyboardInterrupt:
        _print_summary(events, args, out)
        raise
    _print_summary(events, args, out)
    return EXIT_OK


def _print_summary(events: Sequence[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        return
    if events and not args.summary:
        print(file=out)
    for line in summary(events, args.top):
        print(line, file=out)


def matching(events: Iterable[dict[str, Any]], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    kinds = set(args.event or (DECISION_EVENTS if args.request_id else ["decision"]))
    for event in events:
        if "all" not in kinds and _text(event.get("event")) not in kinds:
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
    """One line per event, with client-chosen text (path, host, subject) escaped for the terminal."""
    return printable(_event_line(event))


def _event_line(event: dict[str, Any]) -> str:
    def field(name: str, default: str = "") -> str:
        return _text(event.get(name)) or default

    ts = field("ts")[:23]
    where = f"{field('method', '-')} {field('host')}{field('path')}"
    kind = event.get("event")
    if kind == "completion":
        duration = event.get("duration_us")
        took = f"{duration / 1000:.1f}ms" if type(duration) in (int, float) else "-"
        return (f"{ts}  completion {field('status')} {field('response_flags', '-'):<6} {field('bytes_sent')}B "
                f"{took}  {where}  {field('request_id')}")
    if kind == "decision":
        return (f"{ts}  {field('decision', '?'):<5} {field('status')} {field('reason'):<22} "
                f"{field('subject', '-'):<16} {where}  {field('request_id')}")
    fields = " ".join(f"{name}={json.dumps(value, separators=(',', ':'))}" for name, value in event.items()
                      if name not in _COMMON_FIELDS)
    return f"{ts}  {_text(kind)}  {fields}  {field('instance')}".rstrip()


def summary(events: Sequence[dict[str, Any]], top: int) -> Iterator[str]:
    decisions = [event for event in events if event.get("event") == "decision"]
    counts = Counter(_text(event.get("decision")) for event in decisions)
    kinds = [_text(event.get("event")) for event in events]
    others = Counter(kind for kind in kinds if kind not in DECISION_EVENTS)
    times = [_text(event["ts"]) for event in events if event.get("ts")]
    span = f" from {min(times)} to {max(times)}" if times else ""
    completions = kinds.count("completion")
    other_kinds = "".join(f", {count} {kind}" for kind, count in sorted(others.items()))
    yield printable(f"{len(events)} events: {counts.get('allow', 0)} allow, {counts.get('deny', 0)} deny, "
                    f"{completions} completion{other_kinds}{span}")
    tables = (
        ("top reasons", Counter(_text(event.get("reason")) for event in decisions)),
        ("top subjects", Counter(_text(event.get("subject")) or "(anonymous)" for event in decisions)),
        ("top sources", Counter(_text(event.get("source_address")) or "-" for event in decisions)),
        ("top denied paths", Counter(_text(event.get("path")) for event in decisions
                                     if event.get("decision") == "deny")),
    )
    for title, counter in tables:
        if counter:
            yield f"{title}:"
            for value, count in counter.most_common(top):
                yield printable(f"  {count:>7}  {value}")


def _text(value: object) -> str:
    """A field as text: a string as is, null as empty, anything else (a number; a list or object in a damaged
    or foreign file) as JSON, so such a file is listed rather than crashing the listing."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


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


class _Input:
    """The lines of several files read as one stream (chains continue across rotated files), each line
    locatable: `line N` when there is one file, `FILE:N` when there are several."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = files
        self._starts: list[tuple[int, str]] = []  # (lines read before the file, its name)

    def __iter__(self) -> Iterator[str]:
        read = 0
        for name in self.files:
            self._starts.append((read, "<stdin>" if name == "-" else name))
            for line in _lines([name]):
                read += 1
                yield line

    def locate(self, number: int) -> str:
        if len(self.files) == 1:
            return f"line {number}"
        before, name = next(start for start in reversed(self._starts) if start[0] < number)
        return f"{name}:{number - before}"


def _events(files: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of the input; lines that are not JSON are skipped and counted (a live stream may carry a
    cut line), but input with lines and no JSON object at all is not an audit stream: a ValueError."""
    skipped = found = 0
    for line in _lines(files):
        try:
            event = json.loads(line)
        except ValueError:
            skipped += line.strip() != ""
            continue
        if isinstance(event, dict):
            found += 1
            yield event
    if skipped and not found:
        raise ValueError(f"{', '.join(files)}: no JSON line in {skipped} line(s): not an audit stream")
    if skipped:
        print(f"({skipped} lines were not JSON and were skipped)", file=sys.stderr)
