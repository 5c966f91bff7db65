"""extauth: the security control point beside Envoy (ext_authz v3).

It also decides, before any submodule is imported, whether the mypyc-compiled modules run (docs/deployment.md,
"Compiled modules"): only while `native.json`'s digest matches their sources, so an edited source never runs as its
old build, and never with EXTAUTH_PURE_PYTHON=1. Otherwise every compiled module loads from its .py: all or none,
because compiled modules call each other directly, past the Python module objects.
"""

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
NATIVE_MANIFEST = PACKAGE_DIR / "native.json"


def native_source(module: str) -> Path:
    """The .py a compiled module is built from (a package's is its `__init__.py`)."""
    path = PACKAGE_DIR.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def native_digest(modules: Iterable[str]) -> str:
    """The sha256 of the modules' names and sources, as the build records it."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.encode() + b"\0")
        digest.update(native_source(module).read_bytes())
    return digest.hexdigest()


def _native_choice() -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(modules running compiled, compiled modules loaded from source instead, why)."""
    if not NATIVE_MANIFEST.exists():
        return (), (), "pure Python: no compiled modules (make native)"
    record = json.loads(NATIVE_MANIFEST.read_text())
    modules = tuple(record["modules"])
    if os.environ.get("EXTAUTH_PURE_PYTHON", "") not in ("", "0"):
        return (), modules, "pure Python: EXTAUTH_PURE_PYTHON is set"
    try:
        stale = native_digest(modules) != record["digest"]
    except OSError:
        stale = True
    if stale:
        return (), modules, "pure Python: the compiled modules are older than their sources (make native)"
    return modules, (), f"native: {len(modules)} modules compiled with mypyc"


class _SourceFirst:
    """Loads the listed modules from their .py, which the import system would otherwise pass over for the .so."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in self.modules:
            return None
        source = native_source(name)
        package = [str(source.parent)] if source.name == "__init__.py" else None
        return spec_from_file_location(name, source, submodule_search_locations=package)


#: What `extauth serve` logs at startup and `extauth version` prints.
NATIVE_MODULES, _SOURCE_MODULES, NATIVE_STATUS = _native_choice()
if _SOURCE_MODULES:
    sys.meta_path.insert(0, _SourceFirst(_SOURCE_MODULES))
