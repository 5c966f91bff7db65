"""What every `extauth` command shares: its exit codes and an argument parser whose errors are one line.

Exit codes (README.md, "Exit codes"): 0 ok (allow, pass); 1 a verdict that failed (deny, a failing test, an
invalid config for `validate`, a tampered or unsealed audit file, `serve` unable to listen); 2 a usage,
configuration or input error (bad option, missing or unreadable file); 70 an internal error (a bug: rerun with
EXTAUTH_DEBUG=1 for the traceback); 130 interrupted (Ctrl-C); 141 stdout closed early (`| head`), as for any
Unix filter killed by SIGPIPE.
"""

import argparse
import sys
import unicodedata
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL_ERROR = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that reports a usage error in one line that points to `--help`, instead of the usage
    block followed by the error, so every failure of the CLI reads the same way."""

    def error(self, message: str) -> NoReturn:
        print(printable(f"{self.prog}: error: {message} (see {self.prog} --help)"), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def printable(text: str) -> str:
    """`text` safe to print on a terminal in one line: control and format characters (newlines, escape sequences,
    bidirectional overrides) escaped as `\\x1b`, `\\u202e`, ... Audit events carry client-chosen text (paths,
    subjects, hosts), which must not move the cursor, recolour or rewrite what an operator reads."""
    return "".join(_escape(char) if unicodedata.category(char) in _UNPRINTABLE else char for char in text)


_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
