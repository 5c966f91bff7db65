"""Count the imports between extauth's packages, per direction, so a layering change can show before and after.

Run: `python tests/support/import_graph.py [ROOT]` (default: the extauth package of this checkout). A package is
a subpackage (`extauth/policy/`) or a top-level module (`extauth/request.py`); an edge is one `import` statement
in one file naming a module of another package (function-level imports included, `TYPE_CHECKING` ones too).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGE = "extauth"


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def _module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(file: Path, module: str) -> list[str]:
    is_package = file.name == "__init__.py"
    tree = ast.parse(file.read_text(), filename=str(file))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
    return found


def cross_package_imports(root: Path) -> Counter[tuple[str, str]]:
    """(importing package, imported package) -> number of import statements, for every pair of distinct packages."""
    edges: Counter[tuple[str, str]] = Counter()
    for file in sorted(root.rglob("*.py")):
        module = _module_name(root, file)
        source = _package_of(module)
        for target_module in _imported_modules(file, module):
            target = _package_of(target_module)
            if source and target and target != source:
                edges[(source, target)] += 1
    return edges


def report(edges: Counter[tuple[str, str]]) -> str:
    lines = [f"{'from':<14} {'to':<14} imports"]
    lines += [f"{a:<14} {b:<14} {n}" for (a, b), n in sorted(edges.items())]
    cycles = sorted({tuple(sorted(pair)) for pair in edges if (pair[1], pair[0]) in edges})
    lines.append("")
    lines.append(f"package pairs importing each other in both directions: {len(cycles)}")
    lines += [f"  {a} <-> {b}: {edges[(a, b)]} / {edges[(b, a)]}" for a, b in cycles]
    lines.append(f"cross-package import statements: {sum(edges.values())} over {len(edges)} directed pairs")
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / PACKAGE
    print(report(cross_package_imports(root)))
