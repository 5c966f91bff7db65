"""The admin API from the command line: `extauth status`, `explain --live`, `reload`, `audit tail`.

The CLI reaches a process over its unix socket (default: the local stack's `.run/admin.sock`) or over loopback TCP
(`kubectl port-forward`); an address it cannot reach ends in one line naming it and how to enable the API.
"""

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from extauth.admin.v1 import admin_pb2, admin_pb2_grpc
from extauth.audit.cli import format_event
from extauth.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, printable
from extauth.config.schema import ListenAddress
from extauth.devstack.stack import StackPaths

#: Seconds a unary call may take; a reload compiles every policy file, so it gets longer.
CALL_TIMEOUT_SECONDS = 10.0
RELOAD_TIMEOUT_SECONDS = 120.0
ENABLE_HINT = "enable it with `admin: {listen: unix:PATH}` in the extauth config (docs/operations.md)"

Reply = TypeVar("Reply", bound=Message)


class AdminError(Exception):
    """The admin API could not answer; `exit_code` says whether the request (2) or the service (1) is at fault."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def admin_address(text: str) -> ListenAddress:
    """`--admin`: `unix:PATH`, a path (with a `/`), or loopback `tcp:HOST:PORT` / `HOST:PORT` (an argparse type).
    The CLI speaks plaintext, so TCP only to this host (port-forwards included)."""
    if text.startswith("unix:") or ("/" in text and not text.startswith("tcp:")):
        path = Path(text.removeprefix("unix:"))
        if str(path) in ("", "."):
            raise argparse.ArgumentTypeError(f"{text!r}: no socket path")
        return ListenAddress("unix", path=path.absolute())
    try:
        address = ListenAddress.parse(text if text.startswith("tcp:") else f"tcp:{text}")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected unix:PATH, a socket path, or HOST:PORT") from None
    if not address.local_only() or address.port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the CLI reaches the admin API over a unix socket or loopback "
                                         "TCP (kubectl port-forward) only")
    return address


def default_address() -> ListenAddress:
    return ListenAddress("unix", path=StackPaths.shipped().admin_socket)


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", type=admin_address, metavar="ADDRESS",
                        help="the process's admin listener: unix:PATH, a socket path, or loopback HOST:PORT "
                             "(default: the local stack's .run/admin.sock)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def command(name: str, run: Callable[[argparse.Namespace, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    """`run` as an argparse `run` default: an AdminError ends in one line naming the command, and its exit code."""
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args, sys.stdout)
        except AdminError as error:
            print(printable(f"extauth {name}: error: {error}"), file=sys.stderr)
            return error.exit_code
    return guarded


class AdminClient:
    def __init__(self, address: ListenAddress | None) -> None:
        self.address = address or default_address()

    def _call(self, method: Callable[[admin_pb2_grpc.AdminStub], Callable[..., Reply]], request: Message,
              timeout: float = CALL_TIMEOUT_SECONDS) -> Reply:
        self._check_socket()
        with grpc.insecure_channel(self.address.grpc_target()) as channel:
            try:
                return method(admin_pb2_grpc.AdminStub(channel))(request, timeout=timeout)
            except grpc.RpcError as error:
                raise self._failure(error) from None

    def _check_socket(self) -> None:
        path = self.address.path
        if path is not None and not path.exists():
            raise AdminError(f"no admin socket at {path}: is extauth running with the admin API? {ENABLE_HINT}")

    def _failure(self, error: grpc.RpcError) -> AdminError:
        code, details = error.code(), error.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE:
            return AdminError(f"cannot reach the admin API at {self.address}: {details.split(':')[0]}; "
                              f"{ENABLE_HINT}")
        usage = code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        return AdminError(f"admin API at {self.address}: {code.name}: {details}", EXIT_USAGE if usage else EXIT_FAILED)

    def status(self) -> admin_pb2.StatusResponse:
        return self._call(lambda stub: stub.Status, admin_pb2.StatusRequest())

    def explain(self, request: admin_pb2.ExplainRequest) -> admin_pb2.ExplainResponse:
        return self._call(lambda stub: stub.Explain, request)

    def reload(self) -> admin_pb2.ReloadResponse:
        return self._call(lambda stub: stub.Reload, admin_pb2.ReloadRequest(), RELOAD_TIMEOUT_SECONDS)

    def tail(self, request: admin_pb2.TailAuditRequest) -> Iterator[admin_pb2.AuditLine]:
        self._check_socket()
        with grpc.insecure_channel(self.address.grpc_target()) as channel:
            try:
                yield from admin_pb2_grpc.AdminStub(channel).TailAudit(request)
            except grpc.RpcError as error:
                raise self._failure(error) from None


def as_json(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                                preserving_proto_field_name=True), indent=2, sort_keys=True)


def run_status(args: argparse.Namespace, out: TextIO) -> int:
    """0 when all is well; 1 when something needs a look (not ready, the last reload failed, the limit store's
    breaker is not closed), so a script or a probe can use the exit status alone."""
    status = AdminClient(args.admin).status()
    print(as_json(status) if args.json else "\n".join(printable(line) for line in status_lines(status)), file=out)
    healthy = status.ready and status.last_reload.ok and status.rate_limit.breaker == "closed"
    return EXIT_OK if healthy else EXIT_FAILED


def status_lines(status: admin_pb2.StatusResponse) -> Iterator[str]:
    yield (f"instance       {status.instance} (pid {status.pid}), started {status.start_time}, "
           f"{'ready' if status.ready else 'NOT READY (keys still loading)'}")
    yield f"policy         {status.policy.version} from {status.policy.source}"
    shadow = status.shadow_policy
    yield f"shadow policy  {f'{shadow.version} from {shadow.source}' if shadow.version else 'none'}"
    reload = status.last_reload
    counts = f"{reload.reloads} reloads, {reload.failures} failures"
    if reload.ok:
        yield f"last reload    ok ({reload.trigger} at {reload.at}); {counts}"
    else:
        yield f"last reload    FAILED ({reload.trigger} at {reload.at}), still serving {reload.version}; {counts}"
        yield from (f"                 {error}" for error in reload.errors)
    for provider in status.identity_providers:
        age = f"loaded {provider.keys_age_seconds:.0f}s ago" if provider.keys_age_seconds >= 0 else "never loaded"
        yield (f"provider       {provider.name} ({provider.issuer}): {provider.keys} keys from {provider.source}, "
               f"{age}, {provider.refresh_failures} failed refreshes{'' if provider.ready else ', NOT READY'}")
    limits = status.rate_limit
    error = f", last error: {limits.last_error}" if limits.last_error else ""
    yield (f"rate limit     {limits.kind}, breaker {limits.breaker}, {limits.backend_errors} errors in "
           f"{limits.backend_calls} calls, {limits.short_circuited} short-circuited{error}")
    audit = status.audit
    dropped = ", ".join(f"{kind} {count}" for kind, count in sorted(audit.dropped.items())) or "none"
    yield (f"audit          queue {audit.queue_depth}/{audit.queue_size}, {audit.written} written, "
           f"dropped: {dropped}, {audit.tail_subscribers} tailing")


def explain_live(args: argparse.Namespace, out: TextIO) -> int:
    """`extauth explain --live`: 0 allow, 1 deny, 2 usage error, as `extauth explain`."""
    from extauth.devtools.tokens import parse_claim

    for option, given in (("--token", args.token), ("--at", args.at), ("--config", args.config)):
        if given:
            raise AdminError(f"--live explains with the process's own policy at its own time, from claims: "
                             f"{option} does not apply (describe the principal with --sub and --claim)", EXIT_USAGE)
    claims = dict(parse_claim(text) for text in args.claim)
    request = admin_pb2.ExplainRequest(
        method=args.method, url=args.url, headers=dict(args.header), source_address=args.source, peer=args.peer,
        context_extensions=dict(args.context), subject=args.sub or "", claims_json=json.dumps(claims),
        shadow=args.shadow)
    answer = AdminClient(args.admin).explain(request)
    if args.json:
        print(as_json(answer), file=out)
    else:
        print("\n".join(printable(line) for line in answer.lines), file=out)
    return EXIT_OK if answer.allowed else EXIT_FAILED


def run_reload(args: argparse.Namespace, out: TextIO) -> int:
    """0 when the reload swapped in, 1 when it was rejected (the previous version keeps serving)."""
    result = AdminClient(args.admin).reload().result
    if args.json:
        print(as_json(result), file=out)
    elif result.ok:
        print(f"reloaded: serving policy {result.version}", file=out)
    else:
        print(printable(f"reload rejected: still serving policy {result.version}"), file=out)
        for error in result.errors:
            print(printable(f"  {error}"), file=out)
    return EXIT_OK if result.ok else EXIT_FAILED


def tail_parser() -> argparse.ArgumentParser:
    from extauth.audit.kinds import EVENT_KINDS
    from extauth.cli_support import CommandParser

    parser = CommandParser(prog="extauth audit tail",
                           description="stream a running process's audit events as it writes them (admin API); "
                                       "Ctrl-C ends it")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--deny", action="store_true", help="denials only")
    decision.add_argument("--allow", action="store_true", help="allowed requests only")
    parser.add_argument("--subject", help="decisions of this subject only")
    parser.add_argument("--reason", action="append", default=[], help="decisions with this reason code only "
                                                                      "(repeatable)")
    parser.add_argument("--route", help="decisions of this policy route only")
    parser.add_argument("--event", action="append", default=[], choices=tuple(EVENT_KINDS), metavar="KIND",
                        help="events of this kind only (repeatable; default every kind)")
    add_admin_options(parser)
    parser.set_defaults(run=command("audit tail", run_tail))
    return parser


def run_tail(args: argparse.Namespace, out: TextIO) -> int:
    """Until Ctrl-C (exit 130) or the process stops (exit 1); lines this reader lost are reported on stderr."""
    request = admin_pb2.TailAuditRequest(
        events=args.event, decision="deny" if args.deny else "allow" if args.allow else "",
        reasons=args.reason, subject=args.subject or "", route=args.route or "")
    for line in AdminClient(args.admin).tail(request):
        if line.dropped_before:
            print(f"({line.dropped_before} events dropped: this tail read too slowly)", file=sys.stderr)
        print(line.json if args.json else _readable(line.json), file=out, flush=True)
    print("the audit stream ended (the process stopped)", file=sys.stderr)
    return EXIT_FAILED


def _readable(text: str) -> str:
    """One line per event, as `extauth audit` lists a file; a line that is no JSON object is shown as it is."""
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    return format_event(event) if isinstance(event, dict) else printable(text)
