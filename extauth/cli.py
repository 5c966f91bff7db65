"""The `extauth` command line: serve, validate, and the local-development helpers."""

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from extauth.audit.cli import main as audit_main
from extauth.audit.cli import register as register_audit
from extauth.cli_support import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandParser,
    printable,
)
from extauth.config import ConfigError, load_config
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_VARIABLE
from extauth.identity.jwks import KeyLoadError

#: Set to 1 to see the traceback of any error, foreseen or not.
DEBUG_VARIABLE = "EXTAUTH_DEBUG"
#: Commands whose verdict is about the config itself: an invalid one is their failed verdict, not a usage error.
_CONFIG_IS_THE_VERDICT = {"validate"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every foreseeable failure (bad config or input, missing or unreadable file, Ctrl-C, a
    closed stdout) ends in one line on stderr and its exit code (extauth/cli_support.py), never a traceback.
    Anything else is a bug: `internal error: ...` with a hint to rerun with EXTAUTH_DEBUG=1 for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    try:
        try:
            return _dispatch(argv)
        finally:
            sys.stdout.flush()  # a closed pipe fails here, inside the handlers, not at interpreter exit
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _debug_traceback()
        print("extauth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as error:
        _debug_traceback()
        print("\n".join(printable(line) for line in str(error).split("\n")), file=sys.stderr)
        return EXIT_FAILED if command in _CONFIG_IS_THE_VERDICT else EXIT_USAGE
    except OSError as error:
        _debug_traceback()
        where = f"{error.filename}: " if error.filename else ""
        print(printable(f"extauth {command}: error: {where}{error.strerror or error}"), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyLoadError) as error:  # input that does not parse: a claim, a key, a non-JSON stream
        _debug_traceback()
        print(printable(f"extauth {command}: error: {error}"), file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(printable(f"extauth {command}: internal error: {type(error).__name__}: {error} "
                        f"(rerun with {DEBUG_VARIABLE}=1 for the traceback, and please report it)"), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["audit"]:
        return audit_main(argv[1:])  # its own parser: a subcommand or FILEs, options anywhere
    args = _parser().parse_args(argv)
    return int(args.run(args))


def _debug_traceback() -> None:
    if os.environ.get(DEBUG_VARIABLE) == "1":
        traceback.print_exc()


def _discard_stdout() -> None:
    """The reader went away (`| head`): point stdout at /dev/null so nothing more is written to the closed pipe,
    not even by the interpreter's final flush (the recipe of Python's signal module documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests): nothing to redirect
        pass
    finally:
        os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="extauth", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the ext_authz gRPC service")
    serve.add_argument("--config", type=Path, required=True, help="the extauth YAML config (docs/configuration.md)")
    serve.add_argument("--workers", type=int, help="processes, each on its own socket (overrides server.workers)")
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--rate-limit-backend", metavar="URL", type=_backend_url,
                       help="limit store, e.g. redis://127.0.0.1:6379/0 (overrides rate_limit.backend)")
    serve.set_defaults(run=_serve)

    validate = commands.add_parser("validate", help="check a config file and the policies it names")
    validate.add_argument("config", type=Path, help="the extauth YAML config; the policies it names are checked too")
    validate.set_defaults(run=_validate)

    test = commands.add_parser("test", help="run the policy test cases in DIR/tests against the policies in DIR")
    test.add_argument("directory", type=Path, help="a policy directory with its test cases in DIR/tests/*.yaml")
    test.add_argument("-v", "--verbose", action="store_true", help="also list passing cases")
    test.set_defaults(run=_test)

    explain = commands.add_parser("explain", help="show how the policy decides a request, and why")
    explain.add_argument("--config", type=Path, required=True, help="the extauth YAML config whose policy decides")
    explain.add_argument("method", help="HTTP method, e.g. GET")
    explain.add_argument("url", help="/path?query or https://host/path?query")
    explain.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                         help="a request header (repeatable)")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--token", help="a JWT, verified with the configured providers")
    who.add_argument("--sub", help="subject of a principal described by hand (with --claim)")
    explain.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                         help="claim of the hand-described principal; roles=a,b sets its roles")
    explain.add_argument("--source", default="192.0.2.10", help="client IP")
    explain.add_argument("--peer", default="", help="mTLS peer identity (e.g. a SPIFFE ID)")
    explain.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                         help="Envoy context_extensions of the route")
    explain.add_argument("--at", type=_instant, metavar="ISO_TIME",
                         help="evaluate at this time (time windows); UTC unless it names a zone, e.g. +02:00")
    explain.add_argument("--shadow", action="store_true", help="explain with the shadow policy instead")
    explain.set_defaults(run=_explain)

    token = commands.add_parser("token", help="mint a development token the local stack trusts")
    token.add_argument("--sub", required=True, help="subject")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                       help="extra claim; a comma in VALUE makes a list (roles=reader,writer)")
    token.add_argument("--claim-json", action="append", default=[], metavar="NAME=JSON",
                       help="extra claim whose value is JSON (numbers, booleans, objects): --claim-json level=3")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    token.add_argument("--key", type=Path, metavar="PEM",
                       help=f"RSA private key to sign with (default: ${DEV_KEY_VARIABLE}, else the key `make run` "
                            "created in this checkout's .run/certs, from any directory)")
    token.add_argument("--issuer", help=f"iss claim (default {DEV_ISSUER}, the local stack's provider)")
    token.add_argument("--audience", help=f"aud claim (default {DEV_AUDIENCE})")
    token.set_defaults(run=_token)

    certs = commands.add_parser("dev-certs", help="create a local CA, TLS certificates and a JWT signing key")
    certs.add_argument("directory", type=Path, help="where to write them (created; `make run` uses .run/certs)")
    certs.add_argument("--force", action="store_true", help="replace existing files")
    certs.set_defaults(run=_dev_certs)

    upstream = commands.add_parser("dev-upstream", help="run the demo TLS upstream that echoes requests")
    upstream.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    upstream.add_argument("--port", type=int, default=8444, help="HTTPS port (default 8444: envoy.yaml)")
    upstream.add_argument("--certs", type=Path, metavar="DIR",
                          help="upstream.crt and upstream.key from dev-certs (default: this checkout's .run/certs, "
                               "from any directory)")
    upstream.set_defaults(run=_dev_upstream)

    stack = commands.add_parser("dev-stack", help="run Envoy + extauth + the demo upstream locally")
    stack.add_argument("--no-demo", action="store_true", help="do not send the demonstration requests")
    stack.set_defaults(run=_dev_stack)

    register_audit(commands)
    return parser


def _instant(text: str) -> datetime:
    """An ISO time; without a zone it is UTC (as `extauth audit --since`), not the local zone of the machine."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time (2026-11-24T15:00, +02:00 for a zone)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _backend_url(text: str) -> str:
    from pydantic import ValidationError

    from extauth.config.schema import RateLimitConfig

    try:
        return RateLimitConfig(backend=text).backend
    except ValidationError as error:
        raise argparse.ArgumentTypeError(error.errors()[0]["ctx"]["error"]) from None


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    workers = args.workers or config.server.workers
    if workers > 1 and args.worker_index is None:
        from extauth.workers import Supervisor

        forwarded = ["--rate-limit-backend", args.rate_limit_backend] if args.rate_limit_backend else []
        return Supervisor(args.config, workers, config.server.grace_period_seconds, forwarded).run()
    if args.workers:
        config = config.model_copy(update={"server": config.server.model_copy(update={"workers": workers})})
    if args.rate_limit_backend:
        limits = config.rate_limit.model_copy(update={"backend": args.rate_limit_backend})
        config = config.model_copy(update={"rate_limit": limits})
    import uvloop

    from extauth import logs
    from extauth.server import serve

    logs.configure(config.logging.level)
    supervised = args.worker_index is not None
    return uvloop.run(serve(config, args.config, args.worker_index or 0, supervised=supervised))


def _validate(args: argparse.Namespace) -> int:
    from extauth.clock import SystemClock
    from extauth.policy.store import compile_policy

    config = load_config(args.config)
    summaries = []
    for label, path in (("policy", config.policy.path), ("shadow policy", config.policy.shadow_path)):
        if path is not None:
            summaries.append(f"{label} {compile_policy(path, SystemClock()).version}")
    print(f"{args.config}: ok ({len(config.authentication.providers)} providers; {'; '.join(summaries)})")
    return 0


def _test(args: argparse.Namespace) -> int:
    from extauth.policy.testing import policy_test_files, run_policy_tests

    if not policy_test_files(args.directory):
        print(f"{args.directory / 'tests'}: no policy test files (*.yaml)", file=sys.stderr)
        return 1
    results = run_policy_tests(args.directory)
    for result in results:
        where = f"{result.file}:{result.line}" if result.line else str(result.file)
        if result.passed:
            if args.verbose:
                print(f"PASS {result.name}")
        else:
            print(f"FAIL {result.name} ({where}): {result.failure}")
    failed = sum(not result.passed for result in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    from extauth.policy.explainer import explain_request

    config = load_config(args.config)
    lines, allowed = explain_request(config, args)
    print("\n".join(lines))
    return 0 if allowed else 2


def _token(args: argparse.Namespace) -> int:
    from extauth.devtools.tokens import dev_signing_key, mint_token, parse_claim, parse_json_claim

    claims = dict(parse_claim(text) for text in args.claim)
    claims.update(parse_json_claim(text) for text in args.claim_json)
    key = args.key or dev_signing_key()
    print(mint_token(key, subject=args.sub, claims=claims, ttl_seconds=args.ttl,
                     issuer=args.issuer or DEV_ISSUER, audience=args.audience or DEV_AUDIENCE))
    return 0


def _dev_certs(args: argparse.Namespace) -> int:
    from extauth.devtools.certs import create_dev_certs

    create_dev_certs(args.directory, force=args.force)
    print(f"development certificates and signing key in {args.directory}")
    return 0


def _dev_upstream(args: argparse.Namespace) -> int:
    from extauth.devstack.stack import StackPaths
    from extauth.devtools.certs import DevCerts
    from extauth.devtools.upstream import serve

    certs = DevCerts.in_directory(args.certs or StackPaths.shipped().certs_dir)
    serve(args.host, args.port, certs.upstream_cert, certs.upstream_key)
    return 0


def _dev_stack(args: argparse.Namespace) -> int:
    from extauth.devstack.stack import run_local_stack

    return run_local_stack(demo=not args.no_demo)
