"""Compile the per-Check modules with mypyc, in place, when their sources changed (`make native`).

The extension modules land beside their sources (and mypyc's shared library as `extauth/native__mypyc*.so`), so
an editable install and the image import them from anywhere. `extauth/native.json` records what was compiled and
a digest of its sources: `extauth/__init__.py` loads the compiled set only while that digest still matches, so an
edited source never runs as its old build (docs/deployment.md, "Compiled modules"). Unchanged sources: a no-op.

    python -m extauth.devtools.native [--force | --clean]
"""

import argparse
import json
import os
import sys
from pathlib import Path

from extauth import NATIVE_MANIFEST, PACKAGE_DIR, native_digest, native_source

#: The modules every Check runs through, compiled together (one mypyc group). Left interpreted, for reasons
#: docs/deployment.md gives: identity.principal, servicer, audit.writer, accesslog.
NATIVE_MODULES = (
    "extauth.request",
    "extauth.screening.screener",
    "extauth.audit.events",
    "extauth.respond",
    "extauth.metrics.registry",
    "extauth.pipeline",
    "extauth.authorization.engine",
    "extauth.authorization.index",
    "extauth.authorization.matching",
    "extauth.conditions.predicate",
    "extauth.conditions.params",
    "extauth.conditions.cel",
    "extauth.identity.authenticator",
    "extauth.identity.cache",
    "extauth.identity.token_source",
    "extauth.ratelimit.phase",
    "extauth.ratelimit.plan",
    "extauth.ratelimit.model",
    "extauth.ratelimit.gcra",
    "extauth.ratelimit.memory",
    "extauth.ratelimit.limiter",
    "extauth.audit.queue",
    "extauth.audit.redact",
    "extauth.audit.chain",
    "extauth.decision",
)
GROUP = "extauth.native"
BUILD_DIR = PACKAGE_DIR.parent / "build" / "native"
#: mypy's view of the code: the third-party packages without type information are `Any`, and modules outside the
#: compiled set are read for their types only.
MYPY_OPTIONS = ("--ignore-missing-imports", "--follow-imports=silent", "--no-warn-no-return")


def build_record() -> dict[str, object]:
    """What a build is of: the module list, its sources' digest and the compiler version."""
    from mypy.version import __version__ as mypy_version

    return {"modules": list(NATIVE_MODULES), "digest": native_digest(NATIVE_MODULES), "mypy": mypy_version}


def compiled_files() -> list[Path]:
    """Every extension module a build leaves in the package (of this module list or an earlier one)."""
    return sorted(path for path in PACKAGE_DIR.rglob("*.so") if "__mypyc" in path.name or _is_shim(path))


def _is_shim(path: Path) -> bool:
    return path.with_name(path.name.split(".")[0] + ".py").exists()


def clean() -> None:
    """Back to pure Python: the record goes first, so no interrupted clean leaves a record of a partial build."""
    NATIVE_MANIFEST.unlink(missing_ok=True)
    for path in compiled_files():
        path.unlink()


def build(force: bool = False) -> bool:
    """Compile unless the record matches the sources; True when it compiled."""
    record = build_record()
    current = json.loads(NATIVE_MANIFEST.read_text()) if NATIVE_MANIFEST.exists() else None
    if not force and current == record and all(_shim_of(module).exists() for module in NATIVE_MODULES):
        print(f"compiled modules up to date ({len(NATIVE_MODULES)})")
        return False
    from mypyc.build import mypycify
    from setuptools import setup

    clean()
    print(f"compiling {len(NATIVE_MODULES)} modules with mypyc (mypy {record['mypy']})", flush=True)
    root = PACKAGE_DIR.parent
    previous = Path.cwd()
    os.chdir(root)  # mypy resolves `extauth` from here, and setuptools writes in place relative to it
    try:
        paths = [str(native_source(module).relative_to(root)) for module in NATIVE_MODULES]
        extensions = mypycify([*paths, *MYPY_OPTIONS], group_name=GROUP, target_dir=str(BUILD_DIR / "c"))
        setup(name="extauth-native", ext_modules=extensions, packages=[], py_modules=[],
              script_args=["--quiet", "build_ext", "--inplace", "--build-temp", str(BUILD_DIR / "temp")])
    finally:
        os.chdir(previous)
    NATIVE_MANIFEST.write_text(json.dumps(record, indent=2) + "\n")
    return True


def _shim_of(module: str) -> Path:
    """The extension module mypyc builds for `module` (a package's is `__init__.*.so`)."""
    source = native_source(module)
    return next(source.parent.glob(source.stem + ".*.so"), source.with_suffix(".so-missing"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extauth.devtools.native", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="compile even when the sources did not change")
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules (back to pure Python)")
    options = parser.parse_args(argv)
    if options.clean:
        clean()
        return 0
    build(force=options.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
