"""`extauth envoy-lint FILE...`: lint each bootstrap, apply its waivers, print the findings (text or JSON).

Exit status: 0 no errors (warnings may be printed), 1 an error-level finding, 2 a usage error or an unreadable
or invalid file (extauth/cli_support.py).
"""

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from extauth.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, printable

MISSING_EXTRA = ("extauth envoy-lint: error: needs envoy-data-plane, which the `envoy-lint` extra installs: "
                 "pip install 'extauth[envoy-lint]'")


@dataclass(frozen=True)
class Report:
    file: str
    line: int
    path: str
    rule: str
    severity: str
    message: str
    fix: str

    def text(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return printable(f"{self.file}:{self.line}: {where}{self.severity}: {self.message} "
                         f"(fix: {self.fix}) [{self.rule}]")


def run(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings():  # the generated models trip pydantic deprecation warnings on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from extauth.envoylint.loader import dotted, load_bootstrap
            from extauth.envoylint.rules import ERROR, RULES, Options, lint
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(("envoy_data_plane", "betterproto2")):
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_USAGE
    public_check = None
    if args.policy is not None:
        from extauth.envoylint.public_routes import PolicyPublicCheck
        public_check = PolicyPublicCheck(args.policy)
    options = Options(frozenset(args.allow_plaintext_listener), public_check)
    reports: list[Report] = []
    for path in args.files:
        loaded = load_bootstrap(path)
        for finding in lint(loaded.bootstrap, options):
            if loaded.waiver_for(finding.path, finding.rule) is None:
                reports.append(Report(str(path), loaded.line_of(finding.path), dotted(finding.path), finding.rule,
                                      finding.severity, finding.message, finding.fix))
        reports += [Report(str(path), waiver.line, "", "invalid-waiver", ERROR,
                           f"not a waiver: {waiver.text!r}", "write `# envoy-lint: allow RULE[, RULE] -- reason`")
                    for waiver in loaded.malformed_waivers]
        reports += [Report(str(path), waiver.line, "", "invalid-waiver", ERROR,
                           f"waives unknown rule(s) {', '.join(sorted(waiver.rules - RULES.keys()))}",
                           "name rules as envoy-lint reports them, e.g. ext-authz-failure-mode-allow")
                    for waiver in loaded.waivers.values() if waiver.rules - RULES.keys()]
    if args.format == "json":
        print(json.dumps([report.__dict__ for report in reports], indent=2))
    else:
        for report in reports:
            print(report.text())
    return EXIT_FAILED if any(report.severity == ERROR for report in reports) else EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    """The `envoy-lint` parser (its rule list comes from rules.py only when the extra is installed)."""
    lint_parser = commands.add_parser(
        "envoy-lint", help="report security misconfigurations in Envoy bootstrap files (docs/envoy-lint.md)",
        description="Report the security misconfigurations of Envoy bootstraps, each with the dotted path of the "
                    "offending field and a one-line fix. Waive one with `# envoy-lint: allow RULE -- reason` on "
                    "its line (docs/envoy-lint.md).",
        epilog="exit status: 0 clean (warnings allowed), 1 findings, 2 usage error or unreadable/invalid file")
    lint_parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="an Envoy bootstrap (YAML or JSON)")
    lint_parser.add_argument("--policy", type=Path, metavar="DIR",
                             help="policy directory: a route that disables ext_authz must be public in it "
                                  "(without it, such routes are warnings to review)")
    lint_parser.add_argument("--allow-plaintext-listener", action="append", default=[], metavar="NAME",
                             help="a listener allowed to serve without TLS, for development (repeatable)")
    lint_parser.add_argument("--format", choices=("text", "json"), default="text",
                             help="text: FILE:LINE: PATH: ... per finding; json: one array of findings, for CI")
    lint_parser.set_defaults(run=run)
