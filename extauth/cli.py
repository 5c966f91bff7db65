"""The `extauth` command line: serve, validate, and the local-development helpers."""

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from extauth.audit.cli import add_form as add_audit_form
from extauth.audit.cli import main as audit_main
from extauth.audit.cli import register as register_audit
from extauth.cli_support import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandParser,
    printable,
)
from extauth.config import ConfigError, LoadedConfig, load_config, read_config
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_VARIABLE
from extauth.envoylint.command import register as register_envoy_lint
from extauth.identity.apikey_cli import register as register_apikey
from extauth.identity.keys import KeyLoadError

#: Set to 1 to see the traceback of any error, foreseen or not.
DEBUG_VARIABLE = "EXTAUTH_DEBUG"


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
        return EXIT_USAGE
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
    serve.add_argument("--config", type=Path, required=True, help="the YAML config file (docs/configuration.md)")
    serve.add_argument("--workers", type=int, help="processes, each on its own socket (overrides server.workers)")
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--rate-limit-backend", metavar="URL", type=_backend_url,
                       help="limit store, e.g. redis://127.0.0.1:6379/0 (overrides rate_limit.backend)")
    serve.set_defaults(run=_serve)

    validate = commands.add_parser(
        "validate", help="check a config file and everything serve would load from it; exit 0 valid (warnings "
        "included, unless --strict), 1 invalid, 2 usage error")
    validate.add_argument("config", type=Path, help="the YAML config file (docs/configuration.md)")
    validate.add_argument("--online", action="store_true",
                          help="also fetch each provider's JWKS (or OIDC discovery document) once")
    validate.add_argument("--strict", action="store_true",
                          help="exit 1 on warnings too (a secret written inline in the config file)")
    validate.add_argument("--envoy-bootstrap", type=Path, metavar="FILE",
                          help="the Envoy bootstrap whose ext_authz timeout every queued limit's max_wait must stay "
                               "under (default: the shipped envoy/envoy.yaml, when present)")
    validate.set_defaults(run=_validate)

    test = commands.add_parser(
        "test", help="run the policy test cases in DIR/tests against the policies in DIR",
        description="Run the policy test cases in DIRECTORY/tests/*.yaml against the policies in DIRECTORY, or "
                    "against a candidate, listing the cases whose outcome the candidate changes.",
        epilog="exit status: 0 all passed, 1 some failed, 2 usage or configuration error (including no test files)")
    test.add_argument("directory", type=Path, help="the policy directory; its cases are in DIRECTORY/tests/")
    test.add_argument("--candidate", type=Path, metavar="DIR",
                      help="run the same cases against these policies instead (e.g. policy.shadow_path), and list "
                           "every case whose outcome differs from DIRECTORY's")
    test.add_argument("-v", "--verbose", action="store_true", help="also list passing cases")
    test.set_defaults(run=_test)

    explain = commands.add_parser(
        "explain", help="show how the policy decides a request, and why",
        description="Show how the policy decides a request, why, and which rate limits apply (nothing is counted).",
        epilog="exit status: 0 allow, 1 deny, 2 usage or configuration error")
    explain.add_argument("--config", type=Path, help="the extauth config file naming the policy (without --live)")
    explain.add_argument("method", help="HTTP method")
    explain.add_argument("url", help="/path?query or https://host/path?query")
    explain.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", type=_header_argument,
                         help="a request header (repeatable)")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--token", help="a JWT, verified with the configured providers")
    who.add_argument("--sub", help="subject of a principal described by hand (with --claim)")
    explain.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                         help="claim of the hand-described principal; roles=a,b sets its roles")
    explain.add_argument("--source", default="192.0.2.10", help="client IP")
    explain.add_argument("--peer", default="", help="mTLS peer identity (e.g. a SPIFFE ID)")
    explain.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", type=_context_argument,
                         help="Envoy context_extensions of the route")
    explain.add_argument("--at", type=_moment_argument,
                         help="evaluate at this ISO 8601 time (time windows); without a zone it is UTC")
    explain.add_argument("--shadow", action="store_true", help="explain with the shadow policy instead")
    explain.add_argument("--live", action="store_true",
                         help="ask a running process (admin API) to explain with the policy it has loaded; the "
                              "principal is given with --sub and --claim, never a token")
    _add_admin_options(explain)
    explain.set_defaults(run=_explain)

    status = commands.add_parser(
        "status", help="what a running process serves: policy version, last reload, providers, limits, audit",
        epilog="exit status: 0 all well, 1 something needs a look (not ready, last reload failed, limit store "
               "breaker open) or the admin API cannot be reached, 2 usage error")
    _add_admin_options(status)
    status.set_defaults(run=_admin_command("status", "run_status"))

    reload = commands.add_parser(
        "reload", help="make a running process reload its policy now and print the result",
        epilog="exit status: 0 reloaded, 1 rejected (the previous version keeps serving) or the admin API cannot "
               "be reached, 2 usage error")
    _add_admin_options(reload)
    reload.set_defaults(run=_admin_command("reload", "run_reload"))

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
    register_envoy_lint(commands)
    register_apikey(commands)
    return parser


def _add_admin_options(parser: argparse.ArgumentParser) -> None:
    from extauth.admin.client import add_admin_options

    add_admin_options(parser)


def _admin_command(name: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from extauth.admin import client

        return client.command(name, getattr(client, function))(args)
    return run


def _audit_tail_parser() -> argparse.ArgumentParser:
    from extauth.admin.client import tail_parser

    return tail_parser()


add_audit_form("tail", _audit_tail_parser)


def _backend_url(text: str) -> str:
    from pydantic import ValidationError

    from extauth.config.schema import RateLimitConfig

    try:
        return RateLimitConfig(backend=text).backend
    except ValidationError as error:
        raise argparse.ArgumentTypeError(error.errors()[0]["ctx"]["error"]) from None


def _serve(args: argparse.Namespace) -> int:
    """Exit 2 on a config problem (anything `validate` reports), found before any socket is bound; 1 when it
    cannot listen; 0 after a graceful stop."""
    from extauth.identity.keys import KeyLoadError
    from extauth.preflight import check_startup

    if not args.config.exists():
        return _missing_config(args.config)
    try:
        loaded = read_config(args.config)
        config = loaded.config
        workers = args.workers or config.server.workers
        if args.workers:  # each worker's socket path is checked, not the one a single process would use
            config = config.model_copy(update={"server": config.server.model_copy(update={"workers": workers})})
        issues = check_startup(LoadedConfig(loaded.path, config, loaded.lines)).issues
        if issues:
            raise ConfigError(issues)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if workers > 1 and args.worker_index is None:
        from extauth.workers import Supervisor

        forwarded = ["--rate-limit-backend", args.rate_limit_backend] if args.rate_limit_backend else []
        return Supervisor(args.config, workers, config.server.grace_period_seconds, forwarded,
                          log_level=config.logging.level, audit_output=config.audit.output).run()
    if args.rate_limit_backend:
        limits = config.rate_limit.model_copy(update={"backend": args.rate_limit_backend})
        config = config.model_copy(update={"rate_limit": limits})
    import uvloop

    from extauth import logs
    from extauth.server import serve

    logs.configure(config.logging.level, logs.stream_apart_from(config.audit.output))
    supervised = args.worker_index is not None
    try:
        return uvloop.run(serve(config, args.config, args.worker_index or 0, supervised=supervised))
    except (ConfigError, KeyLoadError) as error:  # a file changed since the check above
        print(f"{args.config}: {error}" if isinstance(error, KeyLoadError) else error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"extauth serve: {error}", file=sys.stderr)
        return 1


def _validate(args: argparse.Namespace) -> int:
    """Exit 0 when `serve` would start (every file it loads checked), 1 with every problem printed, 2 for usage."""
    import asyncio

    from extauth.preflight import check_startup, fetch_key_sources

    if not args.config.exists():
        return _missing_config(args.config)
    try:
        loaded = read_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    bootstrap = args.envoy_bootstrap
    if bootstrap is None:
        from extauth.devstack.envoy import SHIPPED_BOOTSTRAP

        bootstrap = SHIPPED_BOOTSTRAP if SHIPPED_BOOTSTRAP.exists() else None
    elif not bootstrap.exists():
        return _missing_config(bootstrap)
    check = check_startup(loaded, envoy_bootstrap=bootstrap)
    if args.online:
        asyncio.run(fetch_key_sources(loaded, check))
        for line in check.fetched:
            print(line)
    inline_secrets = loaded.inline_secrets()
    for warning in inline_secrets:
        print(f"warning: {warning}", file=sys.stderr)
    if check.issues:
        print(ConfigError(check.issues), file=sys.stderr)
        return 1
    if inline_secrets and args.strict:
        return 1
    versions = "; ".join(f"{label} {version}" for label, version in check.policy_versions.items())
    print(f"{args.config}: ok ({len(loaded.config.authentication.providers)} providers; {versions})")
    return 0


def _missing_config(path: Path) -> int:
    """A CONFIG argument naming no file is a usage error (2), as argparse's own file arguments are."""
    print(f"{path}: does not exist", file=sys.stderr)
    return 2


def _test(args: argparse.Namespace) -> int:
    """0 all passed, 1 some failed, 2 usage or configuration error (invalid policies or cases, no test files)."""
    from extauth.tools.policy_tests import changed_outcomes, policy_test_files, run_policy_tests

    if not policy_test_files(args.directory):
        print(f"{args.directory / 'tests'}: no policy test files (*.yaml)", file=sys.stderr)
        return 2
    now = datetime.now(UTC).timestamp()
    try:
        results = run_policy_tests(args.directory, args.candidate, now)
        live = run_policy_tests(args.directory, now=now) if args.candidate else results
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    for result in results:
        if not result.passed:
            print(f"FAIL {result.name} ({result.where}): {result.failure}")
        elif args.verbose:
            print(f"PASS {result.name}")
    changes = changed_outcomes(live, results)
    for before, after in changes:
        print(f"CHANGED {after.name} ({after.where}): {before.outcome()} -> {after.outcome()}")
    failed = sum(not result.passed for result in results)
    summary = f"{len(results) - failed} passed, {failed} failed"
    if args.candidate:
        summary += f" against {args.candidate}; {len(changes)} changed from {args.directory}"
    print(summary)
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    """0 allow, 1 deny, 2 usage or configuration error (a deny is an answer, not a failure to give one)."""
    from extauth.tools.explain import UsageError, explain_request

    if args.live:
        return _admin_command("explain --live", "explain_live")(args)
    if args.config is None or args.admin is not None or args.json:
        print("extauth explain: error: without --live, --config is required and --admin and --json do not apply "
              "(see extauth explain --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        lines, allowed = explain_request(load_config(args.config), args)
    except (ConfigError, UsageError) as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if allowed else 1


def _header_argument(text: str) -> tuple[str, str]:
    """`--header 'NAME: VALUE'` (an argparse type: a malformed one is a usage error)."""
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'NAME: VALUE'")
    return name.strip().lower(), value.strip()


def _context_argument(text: str) -> tuple[str, str]:
    """`--context KEY=VALUE` (an argparse type)."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def _moment_argument(text: str) -> datetime:
    """`--at` in ISO 8601; without a zone it is UTC (not the machine's local time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an ISO 8601 time such as 2026-11-24T10:00:00+01:00") \
            from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
