"""The compiled modules run from any directory while their build is current; never when a source changed since the
build or EXTAUTH_PURE_PYTHON is set, and then none of them does (compiled modules call each other directly)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extauth import NATIVE_MANIFEST, PACKAGE_DIR
from extauth.devtools.native import NATIVE_MODULES, build_record

built = pytest.mark.skipif(not NATIVE_MANIFEST.exists(), reason="`make native` has not run: pure Python only")
REPORT = ("import importlib, json, sys, extauth; print(json.dumps({'status': extauth.NATIVE_STATUS, "
          "'files': [importlib.import_module(name).__file__ for name in sys.argv[1:]]}))")


def imported(cwd: Path, pure_python: str | None = None, package_parent: Path | None = None) -> dict:
    """What a fresh interpreter in `cwd` reports: the native status and the file each compiled module came from."""
    environment = {key: value for key, value in os.environ.items() if key not in ("EXTAUTH_PURE_PYTHON", "PYTHONPATH")}
    if pure_python is not None:
        environment["EXTAUTH_PURE_PYTHON"] = pure_python
    if package_parent is not None:
        environment["PYTHONPATH"] = str(package_parent)
    result = subprocess.run([sys.executable, "-c", REPORT, *NATIVE_MODULES], cwd=cwd, env=environment,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@built
def test_the_build_record_names_every_listed_module_at_its_current_source() -> None:
    """`make native` compiled exactly NATIVE_MODULES from the sources in the tree, so the suite runs them compiled."""
    assert json.loads(NATIVE_MANIFEST.read_text()) == build_record()


@built
@pytest.mark.parametrize("pure_python", [None, "0"])
def test_every_compiled_module_is_imported_as_an_extension_from_any_directory(tmp_path: Path,
                                                                               pure_python: str | None) -> None:
    """Outside the checkout, each listed module loads from its .so, and the status says native."""
    report = imported(tmp_path, pure_python)
    assert report["status"].startswith("native:")
    assert all(file.endswith(".so") and file.startswith(str(PACKAGE_DIR)) for file in report["files"]), report


@built
@pytest.mark.parametrize("pure_python", ["1", "yes", "true"])
def test_pure_python_loads_every_compiled_module_from_its_source(tmp_path: Path, pure_python: str) -> None:
    """EXTAUTH_PURE_PYTHON set to anything but 0 runs every listed module from its .py, though the .so is there."""
    report = imported(tmp_path, pure_python)
    assert report["status"] == "pure Python: EXTAUTH_PURE_PYTHON is set"
    assert all(file.endswith(".py") for file in report["files"]), report


@built
@pytest.mark.parametrize("edited", sorted({NATIVE_MODULES[0], NATIVE_MODULES[-1]}))
def test_an_edited_compiled_source_runs_as_python_and_so_does_every_other_compiled_module(tmp_path: Path,
                                                                                          edited: str) -> None:
    """A copy of the package whose one compiled source changed after the build loads all of them from source."""
    copy = tmp_path / "extauth"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    unchanged = imported(tmp_path, package_parent=tmp_path)
    assert all(file.endswith(".so") and file.startswith(str(copy)) for file in unchanged["files"]), unchanged
    source = tmp_path.joinpath(*edited.split(".")).with_suffix(".py")
    source.write_text(source.read_text() + "\n# edited after the build\n")
    report = imported(tmp_path, package_parent=tmp_path)
    assert report["status"] == "pure Python: the compiled modules are older than their sources (make native)"
    assert all(file.endswith(".py") and file.startswith(str(copy)) for file in report["files"]), report
