"""The audit event kinds: every `event` the code can write is in extauth/audit/kinds.py, which `extauth audit
--event` offers, and in docs/audit.md; and nothing is listed that the code never writes."""

import ast
import importlib
import re
from pathlib import Path

import extauth
from extauth.audit.cli import forms
from extauth.audit.kinds import EVENT_KINDS

PACKAGE = Path(extauth.__file__).parent
DOCS = Path(__file__).parents[3] / "docs" / "audit.md"
#: The callables that take an event name first: `Notify` implementations and the audit writer's `record`.
EMITTERS = {"notify", "_notify", "record"}


def _module_name(path: Path) -> str:
    """`extauth/audit/writer.py` → `extauth.audit.writer`; a package's `__init__.py` is the package itself."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("extauth", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _name_value(module: str, node: ast.expr) -> object:
    """A string literal, or a module-level constant (`CLOSED_EVENT`) looked up in its module."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(importlib.import_module(module), node.id, None)
    return None


def emitted_event_names() -> dict[str, str]:
    """Each event name found in extauth/ with where: the first argument of a notify/record call, or the `event`
    value of a dict literal (the records the writer and the event builders make)."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[object] = []
            if isinstance(node, ast.Call) and node.args and (
                    getattr(node.func, "attr", None) in EMITTERS or getattr(node.func, "id", None) in EMITTERS):
                names.append(_name_value(module, node.args[0]))
            if isinstance(node, ast.Dict):
                names += [_name_value(module, value) for key, value in zip(node.keys, node.values, strict=True)
                          if isinstance(key, ast.Constant) and key.value == "event"]
            for name in names:
                if isinstance(name, str):
                    found.setdefault(name, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


EMITTED = emitted_event_names()


def test_the_scan_finds_each_way_events_are_written() -> None:
    """The scan sees notify calls, `record` calls, dict literals and constants, so an empty result cannot pass."""
    assert {"decision", "completion", "audit_started", "audit_closed", "audit_checkpoint", "policy_reload_failed",
            "jwks_unavailable", "insecure_listener"} <= EMITTED.keys()


def test_every_emitted_event_is_a_listed_kind() -> None:
    """A new event name in the code must be added to extauth/audit/kinds.py (and so to `--event`)."""
    assert {name: where for name, where in EMITTED.items() if name not in EVENT_KINDS} == {}


def test_every_listed_kind_is_emitted() -> None:
    """No kind is offered that nothing writes (a renamed event leaves no stale name behind)."""
    assert EVENT_KINDS.keys() - EMITTED.keys() == set()


def test_docs_audit_md_documents_every_kind() -> None:
    """docs/audit.md names every kind as `code` (the reference a reader of the trail looks kinds up in)."""
    documented = set(re.findall(r"`([a-z]+(?:_[a-z]+)+|decision|completion)`", DOCS.read_text()))
    assert set(EVENT_KINDS) - documented == set()


def test_audit_event_offers_every_kind_and_all() -> None:
    """`extauth audit --event` accepts each kind, and `all`, and its help lists them."""
    parser = forms()[""]
    event = parser._option_string_actions["--event"]
    assert set(event.choices or ()) == {*EVENT_KINDS, "all"}
    assert all(kind in parser.format_help() for kind in EVENT_KINDS)
