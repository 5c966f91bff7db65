"""No stage hides another: the errors of a policy directory are the errors of each of its files, all at once."""

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from extauth.bundle.compiled import compile_policy
from extauth.clock import ManualClock
from extauth.config import ConfigError

HEAD = "apiVersion: extauth/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"

#: File name -> a document with one kind of mistake, each found by a different stage; role and route names are
#: unique per file so that the files are independent of each other.
MISTAKES = {
    "yaml-syntax.yaml": HEAD.format(kind="Policy", name="a") + "routes: [\n",
    "duplicate-key.yaml": HEAD.format(kind="Policy", name="b") + "roles: {}\nroles: {}\n",
    "unknown-kind.yaml": HEAD.format(kind="Polcy", name="c"),
    "unknown-field.yaml": HEAD.format(kind="Policy", name="d")
    + "routes:\n  - name: d\n    match: {path: {prefix: /d}, sources: [10.0.0.0/8]}\n",
    "cycle.yaml": HEAD.format(kind="Policy", name="e") + "roles:\n  e1: [e2]\n  e2: [e1]\n",
    "undefined-role.yaml": HEAD.format(kind="Policy", name="f")
    + "routes:\n  - name: f\n    rules:\n      - {name: x, when: {roles: [ghost-f]}}\n",
    "limit-param.yaml": HEAD.format(kind="Policy", name="g")
    + "routes:\n  - name: g\n    public: true\n"
    "    limits: [{name: l, key: ['param:tenant'], windows: [{requests: 1, per: 1s}]}]\n",
    "limit-duration.yaml": HEAD.format(kind="Policy", name="h")
    + "routes:\n  - name: h\n    public: true\n"
    "    limits: [{name: l, key: [route], windows: [{requests: 1, per: 1x}]}]\n",
    "regex.yaml": HEAD.format(kind="Policy", name="i")
    + "routes:\n  - name: i\n    match: {path: {regex: '/i/(a'}}\n    public: true\n",
    "screening-regex.yaml": HEAD.format(kind="Screening", name="j")
    + "signatures:\n  - {name: j, targets: [query], pattern: 'union(select'}\n",
    "schema-and-roles.yaml": HEAD.format(kind="Policy", name="k")
    + "roles:\n  k1: [ghost-k]\nroutes:\n  - name: k\n    colour: red\n    public: true\n",
}


def errors_of(files: dict[str, str]) -> list[str]:
    with tempfile.TemporaryDirectory() as directory:
        for name, text in files.items():
            (Path(directory) / name).write_text(text)
        try:
            compile_policy(Path(directory), ManualClock())
        except ConfigError as error:
            return [str(issue).removeprefix(directory + "/") for issue in error.issues]
    return []


ALONE = {name: errors_of({name: text}) for name, text in MISTAKES.items()}


def test_each_mistake_is_an_error_on_its_own() -> None:
    """Every file above is rejected by itself, so the property below is about aggregation, not about luck."""
    assert all(ALONE.values()), [name for name, errors in ALONE.items() if not errors]


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(sorted(MISTAKES)), min_size=2))
def test_a_directory_reports_every_error_of_every_file_in_one_load(names: set[str]) -> None:
    """Whichever mistakes share a directory, one load reports exactly the union of their errors, sorted by file."""
    expected = [error for name in sorted(names) for error in ALONE[name]]
    assert errors_of({name: MISTAKES[name] for name in names}) == expected
