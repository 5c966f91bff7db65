"""Hostile or broken files never crash the loaders: every failure is a ConfigError naming the file."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config
from extauth.documents.loader import load_policies
from extauth.screening.compiler import compile_screening

YAML_FRAGMENTS = st.sampled_from([
    "policy:", " path: p.yaml", "server:", "  workers: ", "  listen: [", "]", "{", "}", "- ", ": ", "&a ", "*a",
    "!!python/object:os.system", "apiVersion: extauth/v1", "kind: Policy", "routes:", "  - name: r", "\t", "\x00",
    "'", '"', "?", "---", "...", "%YAML 1.1", "0x1F", "~", "1e999", "- {name: x, public: true}", "<<: *a", "\ufeff",
    "a: &b [*b]", "1:2:3:4:5", "9" * 5000, "[" * 200, "{a: " * 100, "2001-13-01", "!!timestamp 2001-02-30",
    "!!binary AAAA", "!!set {a}", "? [a]", "!!float", "!!int x",
])
DOCUMENTS = st.lists(st.one_of(YAML_FRAGMENTS, st.text(max_size=20)), max_size=30).map("\n".join)


@pytest.mark.parametrize("load", [load_config, load_policies], ids=["config", "policy"])
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=DOCUMENTS)
def test_any_text_loads_or_fails_with_a_config_error_naming_the_file(tmp_path: Path, load, text: str) -> None:
    """Whatever the file holds, the loader returns a result or raises ConfigError whose issues name the file."""
    path = tmp_path / "extauth.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load(path)
    except ConfigError as error:
        assert error.issues and all(issue.file == path for issue in error.issues)


REGEX_PIECES = st.sampled_from(["(", ")", "(?:", "(?P<a>", "(?i)", "[", "]", "^", "$", "\\", "|", "*", "+", "?", "{2,}",
                                "a", ".", "\\w", "\\1", "(?=", "(?<=", "(?>", "*+", "(?(1)a|b)", "[^/]", "{", "}"])
REGEXES = st.lists(REGEX_PIECES, max_size=40).map("".join) | st.text(max_size=30)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # `re` on `[[`: "possible nested set"
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path_regex=REGEXES, header_regex=REGEXES, signature=REGEXES, nesting=st.integers(0, 1200))
def test_any_regex_in_a_policy_loads_or_fails_with_a_config_error(tmp_path: Path, path_regex: str,
                                                                 header_regex: str, signature: str,
                                                                 nesting: int) -> None:
    """Whatever the regexes (broken, backtracking, nested a thousand deep), loading and compiling the policy and
    its screening returns or raises ConfigError: never RecursionError, never a hang."""
    deep = "(" * nesting + path_regex + ")" * nesting
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: extauth/v1\nkind: Policy\nmetadata: {name: p}\nroutes:\n  - name: r\n"
        f"    match: {{path: {{regex: {json.dumps('/' + deep)}}}}}\n"
        "    rules:\n      - name: x\n"
        f"        when: {{headers: {{x-a: {{regex: {json.dumps(header_regex)}}}}}}}\n"
        "---\napiVersion: extauth/v1\nkind: Screening\nmetadata: {name: s}\nsignatures:\n"
        f"  - {{name: sig, targets: [path], pattern: {json.dumps(signature or 'x')}}}\n",
        encoding="utf-8", errors="surrogatepass")
    try:
        compile_screening(load_policies(path).screening)
    except ConfigError as error:
        assert error.issues and all(issue.file == path for issue in error.issues)
