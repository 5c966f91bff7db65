"""The layering of docs/architecture.md holds: import-linter's contract passes, and it places every package."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from support.import_graph import cross_package_imports

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LAYERS = next(contract for contract in CONTRACTS if contract["type"] == "layers")["layers"]


def _layer_members(layer: str) -> list[str]:
    return [name.strip() for name in re.split(r"[|:]", layer)]


def test_imports_keep_the_layers_and_the_phases_independent() -> None:
    """`lint-imports` (the contract in pyproject.toml) finds no import from a lower layer into a higher one."""
    result = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_of_extauth_sits_in_exactly_one_layer() -> None:
    """A new package or top-level module must be placed in the contract, or nothing constrains its imports."""
    placed = [name for layer in LAYERS for name in _layer_members(layer)]
    top_level = {path.stem for path in (REPO / "extauth").glob("*.py") if path.stem != "__init__"}
    top_level |= {path.parent.name for path in (REPO / "extauth").glob("*/__init__.py")}
    assert sorted(placed) == sorted(top_level)


def test_the_architecture_doc_shows_the_contract_layers_in_order() -> None:
    """docs/architecture.md's layer diagram names the same layers as the contract, top to bottom."""
    text = (REPO / "docs" / "architecture.md").read_text()
    diagram = text.split("(tests/unit/test_architecture.py checks it names the contract's layers) -->\n```\n")[1]
    diagram = diagram.split("```")[0]
    shown = [re.split(r"\s{2,}", line.strip())[0] for line in diagram.splitlines() if line.strip()]
    assert shown == LAYERS


def test_no_two_packages_import_each_other_except_the_dev_stack_and_its_tools() -> None:
    """Import cycles between packages are gone; the only pair left is declared `devstack : devtools`."""
    edges = cross_package_imports(REPO / "extauth")
    both_ways = {frozenset(pair) for pair in edges if (pair[1], pair[0]) in edges}
    assert both_ways == {frozenset({"devstack", "devtools"})}
