"""Every example in README.md and docs/*.md is checked against the tool, so the docs cannot drift from it.

Each fenced block carries a marker on the line right before its opening fence, saying what it is:

    <!-- example: config -->                          a complete config file (Config schema)
    <!-- example: policy -->                          a complete policy file (Policy / Screening documents)
    <!-- example: policy-test -->                     a complete policy test file (PolicyTest documents)
    <!-- example: policy fragment at routes[0].rules -->   YAML placed at that spot of a minimal document
    <!-- example: policy fragment at routes[0].match; one per line -->   each line is a fragment of its own
    <!-- example: run -->                             shell commands (a leading `$ ` is allowed), each must
                                                      exit 0 (`; exit N`: N)
    <!-- example: console -->                         `$ command` lines, each followed by its exact output
    <!-- example: json -->                            one JSON value, or one per line
    <!-- example: envoy routes; in envoy/envoy.yaml -->   Envoy routes that file has, exactly as written
    <!-- example: skip: why it cannot run here -->

Fragments are `config`, `policy`, `policy-test` or `screening` fragments, placed `at top` (merged into the
document) or at a path such as `routes[0].rules[0].when` (a mapping is merged into the one there, anything else
replaces it); `; with AT=YAML` first sets more of the minimal document, e.g. a route path that binds the
fragment's parameters.

Commands run in a scratch checkout, one per block: the checkout's `envoy/` copied, `.venv` linked in and
`.venv/bin` on PATH, the `.run/certs` that `make run` writes. Blocks of the same doc prepare it:
`; save as PATH` writes the block there, `; append to PATH` appends it (one more case); `; same as PATH` says a
block shows a file of the checkout and must hold the same data. A `run` or `console` block may then change its
own copy, in the order written: `; copy PATH => NEW PATH` (a file or directory), `; edit PATH: OLD => NEW`.

Files a config names outside the checkout (`/etc/extauth/...`) may be missing; nothing else may be wrong.
Failures name the block as `file:line` of its opening fence.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauth.audit.signing import write_key_pair
from extauth.config import ConfigError, load_config
from extauth.devstack.stack import create_empty_key_store
from extauth.devtools.certs import create_dev_certs
from extauth.documents.loader import load_policies
from extauth.tools.policy_tests import load_cases

REPO = Path(__file__).parents[3]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- example: (?P<spec>.+?) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
FRAGMENT = re.compile(r"^(?P<kind>config|policy|policy-test|screening) fragment at (?P<at>\S+)$")
#: Messages of a config that names files this machine does not have (the docs' /etc/extauth/... paths).
MISSING_FILE = re.compile(r"does not exist|cannot read .*: No such file or directory")
COMMAND_TIMEOUT_SECONDS = 60

SKELETONS: dict[str, dict[str, Any]] = {
    "config": {"policy": {"path": "policies/"}},
    "policy": {"apiVersion": "extauth/v1", "kind": "Policy", "metadata": {"name": "example"},
               "roles": {"reader": [], "writer": ["reader"], "admin": ["writer"], "support": [], "premium": []},
               "routes": [{"name": "example", "match": {"path": {"prefix": "/example/"}},
                           "rules": [{"name": "example", "when": {"roles": ["reader"]}}]}]},
    "screening": {"apiVersion": "extauth/v1", "kind": "Screening", "metadata": {"name": "example"}},
    "policy-test": {"apiVersion": "extauth/v1", "kind": "PolicyTest", "metadata": {"name": "example"},
                    "cases": [{"name": "example", "request": {"url": "/"}, "expect": {"decision": "deny"}}]},
}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int           # of the opening fence
    lang: str
    marker: str | None  # the text after `example:`, None when the block has no marker
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str:
        return (self.marker or "").split(";")[0].strip()

    @property
    def options(self) -> list[str]:
        return [option.strip() for option in (self.marker or "").split(";")[1:]]


def blocks(doc: Path) -> Iterator[Block]:
    lines = doc.read_text().split("\n")
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        yield Block(doc, index + 1, fence["lang"], marker["spec"] if marker else None,
                    "\n".join(lines[index + 1:end]) + "\n")
        index = end + 1


ALL_BLOCKS = [block for doc in DOCS for block in blocks(doc)]


def test_every_example_block_carries_a_marker() -> None:
    """A block without a marker is unchecked, so it is refused: the message names each one by file:line."""
    unmarked = [block.where for block in ALL_BLOCKS if block.marker is None]
    assert not unmarked, ("these blocks need an `<!-- example: ... -->` marker on the line before the fence "
                          f"(see {Path(__file__).relative_to(REPO)}): {', '.join(unmarked)}")


KINDS = ("config", "policy", "policy-test", "run", "console", "json", "envoy routes")


def test_every_marker_names_a_known_kind() -> None:
    """A misspelt marker would silently check nothing: each is a known kind, a fragment, or a skip with a reason."""
    unknown = [f"{block.where}: {block.marker!r}" for block in ALL_BLOCKS if block.marker is not None
               and block.kind not in KINDS and not FRAGMENT.match(block.kind)
               and not re.match(r"^skip: \S", block.kind)]
    assert not unknown, "unknown example markers:\n" + "\n".join(unknown)


def test_the_docs_have_examples_of_every_checked_kind() -> None:
    """The extraction finds blocks of each kind it checks (a broken extractor must not pass by finding none)."""
    kinds = {"fragment" if FRAGMENT.match(block.kind) else block.kind for block in ALL_BLOCKS}
    assert {*KINDS, "fragment"} <= kinds


# -- YAML examples -----------------------------------------------------------------------------------------


def place(document: dict[str, Any], at: str, fragment: Any) -> dict[str, Any]:
    """Put `fragment` at `at` (`top`, or a path like `routes[0].rules`) of `document`: a mapping is merged into
    a mapping already there, anything else replaces what is there."""
    if at == "top":
        return {**document, **fragment}
    steps = [int(step) if step.isdigit() else step for step in re.findall(r"[^.\[\]]+", at)]
    parent: Any = document
    for step in steps[:-1]:
        parent = parent[step] if isinstance(step, int) else parent.setdefault(step, {})
    last = steps[-1]
    there = parent[last] if isinstance(last, int) else parent.get(last)
    parent[last] = {**there, **fragment} if isinstance(fragment, dict) and isinstance(there, dict) else fragment
    return document


def completed(kind: str, at: str, fragment: Any, options: list[str]) -> str:
    """The skeleton of `kind` with the marker's `with AT=YAML` settings, and the fragment placed at `at`."""
    document = json.loads(json.dumps(SKELETONS[kind]))
    for option in options:
        if option.startswith("with "):
            where, _, value = option.removeprefix("with ").partition("=")
            document = place(document, where.strip(), yaml.safe_load(value))
    return yaml.safe_dump(place(document, at, fragment), sort_keys=False)


def check_documents(kind: str, text: str, directory: Path) -> None:
    """Load `text` as a file of `kind` with extauth's own loader; raises ConfigError on any problem."""
    if kind == "config":
        path = directory / "extauth.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as error:
            real = [issue for issue in error.issues if not MISSING_FILE.search(issue.message)]
            if real:
                raise ConfigError(real) from None
    elif kind in ("policy", "screening"):
        path = directory / "policy.yaml"
        path.write_text(text)
        load_policies(path)
    elif kind == "policy-test":
        path = directory / "cases.yaml"
        path.write_text(text)
        load_cases([path])
    else:
        raise AssertionError(f"unknown document kind {kind!r}")


def yaml_fragments(block: Block) -> list[str]:
    body = textwrap.dedent(block.text)
    if "one per line" in block.options:
        return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [body]


YAML_BLOCKS = [block for block in ALL_BLOCKS
               if block.kind in ("config", "policy", "policy-test") or FRAGMENT.match(block.kind)]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[block.where for block in YAML_BLOCKS])
def test_yaml_example_loads(block: Block, tmp_path: Path) -> None:
    """The example, completed as its marker declares, is accepted by the loader the tool itself uses."""
    fragment = FRAGMENT.match(block.kind)
    texts = ([block.text] if fragment is None else
             [completed(fragment["kind"], fragment["at"], yaml.safe_load(part), block.options)
              for part in yaml_fragments(block)])
    kind = "policy" if fragment is not None and fragment["kind"] == "screening" else (
        fragment["kind"] if fragment else block.kind)
    for text in texts:
        try:
            check_documents(kind, text, tmp_path)
        except ConfigError as error:
            pytest.fail(f"{block.where}: the {block.kind} example does not load:\n{error}\n--- as checked:\n{text}")
    for option in block.options:
        if option.startswith("same as "):
            shipped = option.removeprefix("same as ")
            assert list(yaml.safe_load_all(block.text)) == list(yaml.safe_load_all((REPO / shipped).read_text())), (
                f"{block.where}: the example differs from {shipped}")


def envoy_routes(bootstrap: Any) -> list[Any]:
    return [route for listener in bootstrap["static_resources"]["listeners"]
            for chain in listener["filter_chains"] for network_filter in chain["filters"]
            for virtual_host in network_filter["typed_config"].get("route_config", {}).get("virtual_hosts", [])
            for route in virtual_host["routes"]]


ENVOY_BLOCKS = [block for block in ALL_BLOCKS if block.kind == "envoy routes"]


@pytest.mark.parametrize("block", ENVOY_BLOCKS, ids=[block.where for block in ENVOY_BLOCKS])
def test_envoy_route_example_is_in_the_shipped_bootstrap(block: Block) -> None:
    """An Envoy route shown in the docs is a route of the bootstrap it names (which Envoy itself validates in
    tests/integration/test_envoy_bootstrap.py), so it is known to load and to be what runs."""
    shipped = next(option.removeprefix("in ") for option in block.options if option.startswith("in "))
    routes = envoy_routes(yaml.safe_load((REPO / shipped).read_text()))
    missing = [route for route in yaml.safe_load(block.text) if route not in routes]
    assert not missing, f"{block.where}: not routes of {shipped}: {missing}"


def test_json_examples_parse() -> None:
    """JSON samples (audit events) are JSON: one value per block, or one per line."""
    broken = []
    for block in (block for block in ALL_BLOCKS if block.kind == "json"):
        try:
            json.loads(block.text)
        except json.JSONDecodeError:
            try:
                [json.loads(line) for line in block.text.splitlines() if line.strip()]
            except json.JSONDecodeError as error:
                broken.append(f"{block.where}: {error}")
    assert not broken, "\n".join(broken)


# -- shell examples ----------------------------------------------------------------------------------------


def expected_exit(block: Block) -> int:
    codes = [int(option.removeprefix("exit ")) for option in block.options if option.startswith("exit ")]
    return codes[0] if codes else 0


def commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, blank lines dropped (comments the shell ignores)."""
    joined = text.replace("\\\n", " ")
    return [line.removeprefix("$ ") for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def console_steps(text: str) -> list[tuple[str, str]]:
    """(`command`, expected output) for each `$ command` of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise AssertionError(f"a console block starts with a `$ command`, not {line!r}")
    return [(command, "\n".join(output)) for command, output in steps]


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make run` writes to `.run/certs` (and envoy/extauth.yaml names): certificates, JWKS, audit key."""
    directory = tmp_path_factory.mktemp("run") / "certs"
    create_dev_certs(directory)
    write_key_pair(directory)
    return directory


def workspace(doc: Path, tmp_path: Path, dev_keys: Path) -> Path:
    """A scratch checkout for one doc after `make run`: `envoy/` copied, `.venv` linked, `.run/certs` and the
    empty `.run/apikeys.yaml` present, the doc's `save as` examples written."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "envoy", root / "envoy")
    (root / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(dev_keys, root / ".run" / "certs")
    create_empty_key_store(root / ".run" / "apikeys.yaml")
    for block in (block for block in ALL_BLOCKS if block.doc == doc):
        for option in block.options:
            if option.startswith("save as "):
                target = root / option.removeprefix("save as ")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.text)
            elif option.startswith("append to "):
                with (root / option.removeprefix("append to ")).open("a") as target:
                    target.write(block.text)
    return root


def apply_edits(block: Block, root: Path) -> None:
    """The block's `copy` and `edit PATH: OLD => NEW` options; each OLD must be there, or the example describes
    nothing."""
    for option in block.options:
        if option.startswith("copy "):
            source, _, target = option.removeprefix("copy ").partition(" => ")
            copy = shutil.copytree if (root / source).is_dir() else shutil.copy
            copy(root / source, root / target)
        elif option.startswith("edit "):
            path, _, change = option.removeprefix("edit ").partition(": ")
            old, _, new = change.partition(" => ")
            text = (root / path).read_text()
            assert old in text, f"{block.where}: {path} has no {old!r} to edit"
            (root / path).write_text(text.replace(old, new))


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_SECONDS, check=False)


SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.kind in ("run", "console")]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[block.where for block in SHELL_BLOCKS])
def test_shell_example_runs_as_documented(block: Block, tmp_path: Path, dev_keys: Path) -> None:
    """Each command exits with the documented code (0 unless the marker says otherwise); a console block's
    output is exactly what the doc shows."""
    cwd = workspace(block.doc, tmp_path, dev_keys)
    apply_edits(block, cwd)
    steps = (console_steps(block.text) if block.kind == "console"
             else [(command, None) for command in commands(block.text)])
    for command, expected_output in steps:
        result = run(command, cwd)
        output = (result.stdout + result.stderr).rstrip("\n")
        assert result.returncode == expected_exit(block), (
            f"{block.where}: `{command}` exited {result.returncode}, the doc says {expected_exit(block)}:\n{output}")
        if expected_output is not None:
            assert output == expected_output, (
                f"{block.where}: `{command}` printed something else than the doc shows:\n{output}")


# -- README's map ------------------------------------------------------------------------------------------


def map_entry(name: str) -> str:
    """The text of one entry of README's "What is where" map, continuation lines included."""
    block = next(block for block in ALL_BLOCKS if block.doc.name == "README.md" and block.kind.startswith(
        "skip: a map of the checkout"))
    lines = block.text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip().startswith(name))
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 20):
            break
        entry.append(line)
    return " ".join(entry).strip().removeprefix(name)


def test_readme_map_lists_every_doc_and_every_subcommand() -> None:
    """"What is where" names each file in docs/ and each `extauth` subcommand, no more and no fewer."""
    from extauth.cli import _parser

    documented_docs = set(re.findall(r"[\w-]+\.md", map_entry("docs/")))
    assert documented_docs == {path.name for path in (REPO / "docs").glob("*.md")}
    subcommands = next(action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction))
    documented_commands = {word.strip() for word in map_entry("cli.py").split(",")}
    assert documented_commands == set(subcommands.choices)
