"""Every `extauth` command, listed from the parser itself: bad input ends in one line and a non-zero exit, never a
traceback; every option has help; a closed stdout and Ctrl-C end quietly with their own exit codes."""

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.audit.cli import forms as audit_forms
from extauth.cli import _parser, main
from extauth.cli_support import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USAGE
from extauth.devtools import DEV_KEY_VARIABLE

REPO = Path(__file__).parents[3]
#: A located error line (`file:line: field: message`); a config error may print several.
LOCATED = re.compile(r"^\S.*:\d+: ")


def every_command() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Each command's words and parser, from `extauth`'s parser, so a new command is walked without editing this
    file; `audit` hands its arguments to its own forms (verify, keygen, the filter), walked as commands too, and a
    command with actions of its own (`apikey create`) is walked as one command per action."""
    commands: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not actions:
            commands[words] = parser
        for action in actions:
            for name, subparser in action.choices.items():
                if (*words, name) == ("audit",):
                    commands.update({("audit", form) if form else ("audit",): form_parser
                                     for form, form_parser in audit_forms().items()})
                else:
                    walk((*words, name), subparser)

    walk((), _parser())
    return commands


COMMANDS = every_command()


def _value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions
            if action.nargs != 0 and action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)]


def _required(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in _value_actions(parser) if action.required or not action.option_strings]


def _fill(actions: list[argparse.Action], value: str) -> list[str]:
    options = [word for action in actions if action.option_strings for word in (action.option_strings[-1], value)]
    return options + [value for action in actions if not action.option_strings]


def bad_invocations(words: tuple[str, ...], parser: argparse.ArgumentParser, bad: str) -> Iterator[list[str]]:
    """An unknown option; the required arguments missing; then each argument in turn set to `bad`, with the
    required ones set to `bad` too (so no command can get as far as serving)."""
    required = _required(parser)
    yield [*words, "--no-such-option", *_fill(required, bad)]
    if required:
        yield list(words)
    for action in _value_actions(parser):
        yield [*words, *_fill([*required, *([action] if action not in required else [])], bad)]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else EXIT_USAGE
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A garbage file (binary, not UTF-8, not YAML, not JSON, not PEM) and a path under it, which no one can
    read or create; run from an empty directory, in a checkout without `.run/certs` and with no dev key, so
    nothing falls back to a working default (and no command gets as far as serving)."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xff\xfe{[: -\n\x89PNG\r\n\x1a\n: : ]\n" * 8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("extauth.devstack.stack.REPO_ROOT", tmp_path / "checkout")
    monkeypatch.setenv(DEV_KEY_VARIABLE, str(garbage / "missing.key"))
    monkeypatch.delenv("EXTAUTH_DEBUG", raising=False)
    return {"missing file": str(garbage / "missing"), "garbage file": str(garbage)}


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_reports_bad_input_in_one_line_without_a_traceback(
        words: tuple[str, ...], bad_inputs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file, a garbage file, an unknown option or missing arguments: non-zero exit, one error line
    (or file:line lines), never a traceback or an internal error."""
    for kind, bad in bad_inputs.items():
        for argv in bad_invocations(words, COMMANDS[words], bad):
            status, out, err = run(argv, capsys)
            lines = err.split("\n")[:-1]
            unlocated = [line for line in lines if not LOCATED.match(line)]
            context = f"{kind}: extauth {' '.join(argv)}\n{err}"
            assert status not in (0, EXIT_INTERNAL_ERROR), context
            assert "Traceback" not in err + out and "internal error" not in err, context
            assert len(unlocated) <= 1, context
            assert lines or (status == EXIT_FAILED and out.strip()), context  # a verdict on stdout (audit verify)


#: Commands with an argument to vary (never one that runs with no argument: `dev-stack` would start the stack).
ARGUMENTED = sorted(words for words, parser in COMMANDS.items() if _value_actions(parser))
#: Any text except a path out of the working directory (commands like dev-certs write where they are told), and
#: except line breaks, which `test` and `validate` echo from their own messages (not the shared error handler).
ARGUMENT_TEXT = st.text(max_size=40).filter(
    lambda text: "/" not in text and text != ".." and len(f"{text}.".splitlines()) == 1)


@given(words=st.sampled_from(ARGUMENTED), value=ARGUMENT_TEXT, data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_text_for_any_argument_never_ends_in_a_traceback(
        words: tuple[str, ...], value: str, data: st.DataObject, bad_inputs: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever text an argument gets (NUL bytes, dashes, unicode, numbers), with the required ones given the
    garbage file: the command answers with its exit code and at most one unlocated error line, never a bug."""
    parser = COMMANDS[words]
    required = _required(parser)
    action = data.draw(st.sampled_from(_value_actions(parser)), label="argument")
    others = [other for other in required if other is not action]
    argv = [*words, *_fill(others, bad_inputs["garbage file"]), *_fill([action], value)]
    with tempfile.TemporaryDirectory() as empty:  # what one example creates (dev-certs) the next cannot serve with
        os.chdir(empty)
        status, out, err = run(argv, capsys)
        os.chdir(Path(bad_inputs["garbage file"]).parent)
    context = f"extauth {argv}\n{err}"
    assert status != EXIT_INTERNAL_ERROR and "Traceback" not in err + out, context
    assert len([line for line in err.split("\n")[:-1] if not LOCATED.match(line)]) <= 1, context


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_option_and_argument_has_help(words: tuple[str, ...]) -> None:
    """`extauth CMD --help` explains every option and positional argument the command takes."""
    undocumented = [action.option_strings or action.dest for action in _value_actions(COMMANDS[words])
                    + [action for action in COMMANDS[words]._actions if action.nargs == 0]
                    if not action.help]
    assert undocumented == []


def test_every_command_has_a_summary_in_extauth_help() -> None:
    """`extauth --help` says what each command does."""
    (subcommands,) = [action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)]
    assert [choice.dest for choice in subcommands._choices_actions if not choice.help] == []


def test_a_usage_error_is_one_line_pointing_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    """An argparse error names the command and the problem in one line, and where the usage is."""
    status, _, err = run(["token", "--ttl", "soon", "--sub", "alice"], capsys)
    assert status == EXIT_USAGE
    assert err == ("extauth token: error: argument --ttl: invalid int value: 'soon' "
                   "(see extauth token --help)\n")


def test_explain_at_without_a_zone_is_utc() -> None:
    """`explain --at 2026-11-24T10:00` is 10:00 UTC whatever the machine's zone; a zone given is kept."""
    explain = COMMANDS[("explain",)]
    at = explain.parse_args(["--config", "c", "GET", "/", "--at", "2026-11-24T10:00"]).at
    assert at.isoformat() == "2026-11-24T10:00:00+00:00"
    at = explain.parse_args(["--config", "c", "GET", "/", "--at", "2026-11-24T10:00+02:00"]).at
    assert at.isoformat() == "2026-11-24T10:00:00+02:00"
    assert "without a zone it is UTC" in explain._option_string_actions["--at"].help


def test_an_unexpected_exception_is_an_internal_error_with_a_debug_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug is not dressed up as bad input: `internal error: TYPE: message`, exit 70, and the traceback with
    EXTAUTH_DEBUG=1."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("extauth.devtools.certs.create_dev_certs", broken)
    monkeypatch.delenv("EXTAUTH_DEBUG", raising=False)
    status, _, err = run(["dev-certs", str(tmp_path)], capsys)
    assert status == EXIT_INTERNAL_ERROR
    assert err.splitlines() == ["extauth dev-certs: internal error: RuntimeError: boom (rerun with EXTAUTH_DEBUG=1 "
                                "for the traceback, and please report it)"]
    monkeypatch.setenv("EXTAUTH_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["dev-certs", str(tmp_path)])


@pytest.fixture
def audit_stream(tmp_path: Path) -> Path:
    """Far more output than a pipe holds, so a reader that stops early leaves the writer with a closed pipe."""
    path = tmp_path / "audit.jsonl"
    event = {"event": "decision", "decision": "deny", "status": 403, "reason": "forbidden", "subject": "alice",
             "ts": "2026-11-24T10:00:00.000000Z", "method": "GET", "host": "api.example", "path": "/api/x"}
    path.write_text("".join(json.dumps({**event, "request_id": f"r{n}"}) + "\n" for n in range(3000)))
    return path


def _printing_invocations(audit_stream: Path, tmp_path: Path) -> Iterator[list[str]]:
    """Every command's --help, and the commands that print results."""
    for words in COMMANDS:
        yield [*words, "--help"]
    yield ["audit", str(audit_stream)]
    yield ["audit", "--json", "--event", "all", str(audit_stream)]
    yield ["audit", "verify", str(audit_stream)]
    yield ["audit", "keygen", str(tmp_path / "keys")]
    config = tmp_path / "extauth.yaml"
    config.write_text(f"policy: {{path: {REPO / 'envoy' / 'policies'}}}\n")
    yield ["validate", str(config)]
    yield ["dev-certs", str(tmp_path / "certs")]
    yield ["token", "--sub", "alice", "--key", str(tmp_path / "certs" / "jwt-signing.key")]


def test_a_closed_stdout_ends_every_printing_command_quietly(
        audit_stream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing to a pipe whose reader is gone (`| head`) exits 141 with nothing on stderr, for every command."""
    for argv in _printing_invocations(audit_stream, tmp_path):
        read_end, write_end = os.pipe()
        os.close(read_end)
        stderr = io.StringIO()
        with os.fdopen(write_end, "w") as closed_pipe:
            monkeypatch.setattr(sys, "stdout", closed_pipe)
            monkeypatch.setattr(sys, "stderr", stderr)
            try:
                status = main(argv)
            except SystemExit as exit:  # a command that printed nothing to stdout exits as usual
                status = exit.code
            monkeypatch.undo()
        assert (status, stderr.getvalue()) == (EXIT_BROKEN_PIPE, ""), argv


def test_audit_piped_into_head_prints_no_traceback(audit_stream: Path) -> None:
    """`extauth audit FILE | head -1`, as a shell runs it: one line out, nothing on stderr."""
    result = subprocess.run(f"{sys.executable} -m extauth audit {audit_stream} | head -1", shell=True,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.count("\n") == 1 and "forbidden" in result.stdout
    assert result.stderr == ""


def test_ctrl_c_stops_a_live_audit_with_its_summary_and_exit_130() -> None:
    """`tail -f FILE | extauth audit -` then Ctrl-C: the events so far are summarised, one line on stderr, 130."""
    process = subprocess.Popen([sys.executable, "-m", "extauth", "audit", "--deny", "-"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps({"event": "decision", "decision": "deny", "reason": "forbidden",
                                        "request_id": "r1", "ts": "2026-11-24T10:00:00Z"}) + "\n")
        process.stdin.flush()
        assert process.stdout.readline().rstrip().endswith("r1")  # listed live: the process is in its loop
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED
    assert "1 events: 0 allow, 1 deny" in out
    assert err == "extauth: interrupted\n"
